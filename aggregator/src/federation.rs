//! Federation: aggregators in different countries share what their own
//! sensors observed, each under a policy it sets per peer.
//!
//! - **Export** ([`export`], served at `GET /api/v1/federation/changes`): the
//!   local windows in arrival order after a cursor, as [`Observation`]s. Only
//!   this aggregator's own sensors are exported, never what it learned from
//!   peers. Each peer's [`Policy`] decides what leaves: `aggregates` (port
//!   rows with their distinct-source sketches, class and country totals) or
//!   `aggregates+sources` (also source addresses with counts and
//!   fingerprints), an optional port allow-list, a minimum aggregation
//!   window, and the TLP marking. Sensor ids become keyed pseudonyms and the
//!   monitored blocks are Crypto-PAn anonymised (prefix-preserving) before
//!   anything is serialised. Every export is written to the audit log.
//! - **Import** ([`pull_once`]): pulls a peer's changes after the stored
//!   cursor, validates the whole answer before touching storage (format,
//!   the peer's identity, cursor order, every observation), keeps what the
//!   import policy allows, and stores each observation under the sensor key
//!   `@peer/pseudonym`, replacing any earlier version: applying a change
//!   twice changes nothing, so a pull interrupted anywhere is simply
//!   repeated. The cursor advances only after the observations are stored.
//! - **Global view**: imported rows sit beside local ones; queries and the
//!   detector read `scope=local` (own sensors) or `scope=global` (merged
//!   with the sketches, so a scanner seen in two countries counts once).

use crate::store::fold;
use crate::store::{peer_sensor_key, ExportRecord, Inserted, PeerState, Store, StoreError};
use darkscope_common::anon::CryptoPan;
use darkscope_common::wire::{
    CaptureHealth, ClassTotals, FingerprintCounts, PortCount, PortRow, SensorInfo, SourceRow,
    Summary, TopPorts, Totals, Truncation, Window, SCHEMA,
};
use darkscope_common::{Prefix, Proto, Timestamp};
use hmac::{Hmac, Mac};
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// `format` of every change document.
pub const FORMAT: &str = "darkscope-federation";
/// The change-document version this build writes and reads.
pub const VERSION: u32 = 1;
/// A period is exported under a minimum-window policy only this long after it ended.
const PERIOD_GRACE_US: u64 = 5 * 60_000_000;
/// Most observations one change document may carry.
pub const MAX_LIMIT: usize = 1000;

/// Why federation work failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// Configuration or key problem.
    #[error("federation config: {0}")]
    Config(String),
    /// The peer could not be reached or answered with an HTTP error.
    #[error("peer '{peer}': {msg}")]
    Transport {
        /// Peer id.
        peer: String,
        /// What happened.
        msg: String,
    },
    /// The peer's answer was refused; nothing was stored.
    #[error("peer '{peer}' sent an invalid change document: {msg}")]
    Invalid {
        /// Peer id.
        peer: String,
        /// What was wrong.
        msg: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What a policy lets out (or, for imports, what we keep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Share {
    /// Port rows with distinct-source sketches, class and fingerprint
    /// totals, sensor country: no source address.
    #[default]
    #[serde(rename = "aggregates")]
    Aggregates,
    /// The above plus source rows (addresses, counts, ports, fingerprints).
    #[serde(rename = "aggregates+sources")]
    AggregatesAndSources,
}

impl Share {
    /// The policy's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Share::Aggregates => "aggregates",
            Share::AggregatesAndSources => "aggregates+sources",
        }
    }
}

/// Traffic Light Protocol 2.0 marking of shared data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tlp {
    /// TLP:CLEAR — no limit on disclosure.
    Clear,
    /// TLP:GREEN — the recipient's community.
    Green,
    /// TLP:AMBER — the recipient's organisation and its clients (default).
    #[default]
    Amber,
    /// TLP:AMBER+STRICT — the recipient's organisation only.
    #[serde(rename = "amber+strict")]
    AmberStrict,
    /// TLP:RED — named recipients only.
    Red,
}

impl Tlp {
    /// The marking's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Tlp::Clear => "clear",
            Tlp::Green => "green",
            Tlp::Amber => "amber",
            Tlp::AmberStrict => "amber+strict",
            Tlp::Red => "red",
        }
    }
}

/// A sharing policy for one direction with one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    /// What is shared.
    pub share: Share,
    /// Marking put on exported data.
    pub tlp: Tlp,
    /// Allow-list of `proto/port` (e.g. `tcp/23`, `icmp/8`); empty = all ports.
    pub ports: Vec<String>,
    /// Export coarser than the sensors' windows: whole periods of this many
    /// seconds per sensor, each sent once the period is over (0 = as observed).
    pub min_window_secs: u64,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            share: Share::Aggregates,
            tlp: Tlp::Amber,
            ports: Vec::new(),
            min_window_secs: 0,
        }
    }
}

impl Policy {
    /// The import default: keep everything the peer chooses to send.
    pub fn accept_all() -> Policy {
        Policy {
            share: Share::AggregatesAndSources,
            ..Policy::default()
        }
    }

    fn allowed_ports(&self) -> Result<Option<Vec<(Proto, u16)>>, String> {
        if self.ports.is_empty() {
            return Ok(None);
        }
        self.ports
            .iter()
            .map(|s| {
                let (p, n) = s
                    .split_once('/')
                    .ok_or_else(|| format!("port '{s}' must be PROTO/PORT, e.g. tcp/23"))?;
                let proto =
                    Proto::parse(p).ok_or_else(|| format!("port '{s}': unknown protocol"))?;
                let port = n
                    .parse::<u16>()
                    .map_err(|_| format!("port '{s}': port must be 0-65535"))?;
                Ok((proto, port))
            })
            .collect::<Result<Vec<_>, String>>()
            .map(Some)
    }
}

/// `[[federation.peers]]`: one peer aggregator.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's id (letters, digits, '.', '_', '-'); it must equal the
    /// `origin` the peer puts in its change documents.
    pub id: String,
    /// Base URL we pull from (omit to only let the peer pull from us).
    #[serde(default)]
    pub url: Option<String>,
    /// File holding the token we present to the peer.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// SHA-256 (hex) of the token the peer presents to us (from
    /// `darkscope-aggregator federation token`), or a list of them while a
    /// token is being rotated; omit to give the peer no access.
    #[serde(default, deserialize_with = "one_or_many")]
    pub inbound_token_sha256: Vec<String>,
    /// PEM CA to trust for the peer's certificate (a private CA).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate we present, for a peer that requires mutual
    /// TLS (with `client_key`).
    #[serde(default)]
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    #[serde(default)]
    pub client_key: Option<PathBuf>,
    /// What we share with this peer.
    #[serde(default)]
    pub export: Policy,
    /// What we keep of what the peer sends (`share`, `ports`).
    #[serde(default = "Policy::accept_all")]
    pub import: Policy,
}

impl PeerConfig {
    /// A peer with only an id: no url, no credentials, the default export
    /// policy (`aggregates`) and import policy (keep what is sent).
    pub fn named(id: &str) -> PeerConfig {
        PeerConfig {
            id: id.into(),
            url: None,
            token_file: None,
            inbound_token_sha256: Vec::new(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            export: Policy::default(),
            import: Policy::accept_all(),
        }
    }
}

/// `[federation]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FederationConfig {
    /// Our id as peers know us; put in every change document as `origin`.
    pub id: String,
    /// File with the 32-byte secret (64 hex digits, from `federation keygen`)
    /// keying sensor pseudonyms and Crypto-PAn. Keep it: a new key gives
    /// every sensor a new pseudonym and every block a new anonymised prefix.
    pub key_file: Option<PathBuf>,
    /// Seconds between pulls from each peer.
    pub pull_interval_secs: u64,
    /// Observations asked for per request.
    pub pull_batch: usize,
    /// Largest change document accepted from a peer, MiB.
    pub max_document_mib: usize,
    /// The peers.
    pub peers: Vec<PeerConfig>,
}

impl Default for FederationConfig {
    fn default() -> Self {
        FederationConfig {
            id: String::new(),
            key_file: None,
            pull_interval_secs: 300,
            pull_batch: 200,
            max_document_mib: 64,
            peers: Vec::new(),
        }
    }
}

/// A string or a list of strings.
fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    })
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
}

impl FederationConfig {
    /// True when peers are configured.
    pub fn enabled(&self) -> bool {
        !self.peers.is_empty()
    }

    /// Checks every value (without reading files).
    pub fn validate(&self) -> Result<(), FederationError> {
        let bad = |m: String| Err(FederationError::Config(m));
        if !self.enabled() {
            return Ok(());
        }
        if !valid_id(&self.id) {
            return bad("[federation] id must be 1-64 letters, digits, '.', '_' or '-'".into());
        }
        if self.key_file.is_none() {
            return bad("[federation] key_file is required (darkscope-aggregator federation keygen > federation.key)".into());
        }
        if !(1..=86_400).contains(&self.pull_interval_secs) {
            return bad("[federation] pull_interval_secs must be 1-86400".into());
        }
        if !(1..=MAX_LIMIT).contains(&self.pull_batch) {
            return bad(format!("[federation] pull_batch must be 1-{MAX_LIMIT}"));
        }
        if !(1..=1024).contains(&self.max_document_mib) {
            return bad("[federation] max_document_mib must be 1-1024".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for p in &self.peers {
            if !valid_id(&p.id) || p.id == self.id {
                return bad(format!(
                    "peer id '{}' must be 1-64 letters, digits, '.', '_' or '-', and not our own id",
                    p.id
                ));
            }
            if !seen.insert(&p.id) {
                return bad(format!("peer '{}' is listed twice", p.id));
            }
            if p.client_cert.is_some() != p.client_key.is_some() {
                return bad(format!(
                    "peer '{}': client_cert and client_key go together",
                    p.id
                ));
            }
            if let Some(u) = &p.url {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return bad(format!("peer '{}': url must be http:// or https://", p.id));
                }
                if p.token_file.is_none() {
                    return bad(format!(
                        "peer '{}': url needs token_file (the token we present)",
                        p.id
                    ));
                }
            }
            for h in &p.inbound_token_sha256 {
                if h.len() != 64 || !h.chars().all(|c| c.is_ascii_hexdigit()) {
                    return bad(format!(
                        "peer '{}': inbound_token_sha256 must be 64 hex digits",
                        p.id
                    ));
                }
            }
            for pol in [&p.export, &p.import] {
                pol.allowed_ports()
                    .map_err(|e| FederationError::Config(format!("peer '{}': {e}", p.id)))?;
                if pol.min_window_secs > 86_400 {
                    return bad(format!(
                        "peer '{}': min_window_secs must be at most 86400",
                        p.id
                    ));
                }
            }
        }
        Ok(())
    }

    /// Reads the secret key.
    pub fn load_key(&self) -> Result<[u8; 32], FederationError> {
        let path = self
            .key_file
            .as_ref()
            .ok_or_else(|| FederationError::Config("no key_file".into()))?;
        let text = std::fs::read_to_string(path).map_err(|e| {
            FederationError::Config(format!("cannot read key file '{}': {e}", path.display()))
        })?;
        parse_key(text.trim()).ok_or_else(|| {
            FederationError::Config(format!(
                "key file '{}' must hold 64 hex digits (darkscope-aggregator federation keygen)",
                path.display()
            ))
        })
    }
}

/// A 32-byte key from 64 hex digits.
pub fn parse_key(hex: &str) -> Option<[u8; 32]> {
    if hex.len() != 64 {
        return None;
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(k)
}

/// The first key from `candidates` under which no block in `avoid` comes
/// out of Crypto-PAn unchanged (see [`Anonymiser::prefix`]); about 1 key in
/// 150 leaves a given `/16` as it was, so the first or second candidate
/// nearly always does. `None` if the candidates run out.
pub fn key_avoiding(
    avoid: &[Prefix],
    candidates: impl IntoIterator<Item = [u8; 32]>,
) -> Option<[u8; 32]> {
    candidates.into_iter().find(|k| {
        let pan = CryptoPan::new(k);
        avoid.iter().all(|b| pan.block(b) != *b)
    })
}

/// Lower-case hex.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Federation as the HTTP service needs it.
pub struct Federation {
    /// `[federation]`.
    pub cfg: FederationConfig,
    /// Keyed with the deployment's secret.
    pub anon: Anonymiser,
}

impl Federation {
    /// Validates `cfg` and loads its key; `None` when no peer is configured.
    pub fn load(cfg: &FederationConfig) -> Result<Option<Federation>, FederationError> {
        if !cfg.enabled() {
            return Ok(None);
        }
        cfg.validate()?;
        let key = cfg.load_key()?;
        Ok(Some(Federation {
            cfg: cfg.clone(),
            anon: Anonymiser::new(&key),
        }))
    }
}

/// Turns sensor identities into what may leave: keyed pseudonyms for ids,
/// Crypto-PAn for monitored blocks.
#[derive(Clone)]
pub struct Anonymiser {
    pan: CryptoPan,
    pseudonym_key: [u8; 32],
    /// Blocks this key leaves as they were, each warned about once.
    unchanged: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Anonymiser {
    /// From the deployment's secret key.
    pub fn new(key: &[u8; 32]) -> Anonymiser {
        // An independent key for pseudonyms, so the two uses never share one.
        let mut h = Sha256::new();
        h.update(b"darkscope sensor pseudonym\0");
        h.update(key);
        Anonymiser {
            pan: CryptoPan::new(key),
            pseudonym_key: h.finalize().into(),
            unchanged: Default::default(),
        }
    }

    /// A stable pseudonym for a sensor id (`s-` + 16 hex digits).
    pub fn pseudonym(&self, sensor: &str) -> String {
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        let mut m = Hmac::<Sha256>::new_from_slice(&self.pseudonym_key).expect("any key length");
        m.update(sensor.as_bytes());
        format!("s-{}", &hex(&m.finalize().into_bytes())[..16])
    }

    /// A monitored block, anonymised (prefix-preserving); unparsable
    /// entries are dropped rather than sent in the clear.
    ///
    /// Crypto-PAn leaves a `/16` as it was under about 1 key in 150 (see
    /// `darkscope_common::anon`); the first time a block comes out
    /// unchanged, a warning tells the operator to make a new key.
    pub fn prefix(&self, p: &str) -> Option<String> {
        let block: Prefix = p.parse().ok()?;
        let anon = self.pan.block(&block);
        let text = anon.to_string();
        if anon != block {
            return Some(text);
        }
        if let Ok(mut seen) = self.unchanged.lock() {
            if !seen.contains(&text) {
                log::warn!(
                    "federation: this key leaves monitored block {text} unchanged when \
                     anonymised (Crypto-PAn does so under about 1 key in 150 for a /16); \
                     peers see the real block. If it must stay private, make a new key \
                     (federation keygen --avoid BLOCKS); sensor pseudonyms change with it."
                );
                seen.push(text.clone());
            }
        }
        Some(text)
    }

    /// The blocks this key has left unchanged so far (each warned about).
    pub fn unchanged_blocks(&self) -> Vec<String> {
        self.unchanged.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

/// What one local sensor observed over one window (or policy period), as
/// it leaves for a peer: a full replacement for (origin, sensor, window start).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Observation {
    /// Position in the exporter's log; strictly increasing in a document.
    pub seq: u64,
    /// Sensor pseudonym (stable per exporter key).
    pub sensor: String,
    /// Country of the sensor's blocks.
    pub country: String,
    /// The sensor's monitored blocks, Crypto-PAn anonymised.
    pub darknet: Vec<String>,
    /// Monitored IPv4 addresses.
    pub monitored_ipv4: u64,
    /// `[start, end)`.
    pub window: Window,
    /// Packets per class (the whole window, whatever the port allow-list).
    pub classes: ClassTotals,
    /// Sources carrying each fingerprint.
    pub fingerprints: FingerprintCounts,
    /// Packets, bytes, distinct sources and their sketch (the whole window).
    pub totals: Totals,
    /// True when every distinct count is exact.
    pub exact: bool,
    /// True when a port allow-list removed rows (port rows then do not add
    /// up to the totals).
    #[serde(default)]
    pub ports_filtered: bool,
    /// Per (protocol, port) rows with their sketches.
    pub ports: Vec<PortRow>,
    /// Source rows, only under `aggregates+sources`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sources: Vec<SourceRow>,
}

/// One answer of `GET /api/v1/federation/changes`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Changes {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`VERSION`].
    pub version: u32,
    /// The exporting aggregator's federation id.
    pub origin: String,
    /// The peer this document was cut for.
    pub peer: String,
    /// Policy applied.
    pub share: Share,
    /// Marking of everything in the document.
    pub tlp: Tlp,
    /// The cursor asked for.
    pub cursor: u64,
    /// Ask for changes after this next time.
    pub next_cursor: u64,
    /// True when more changes are ready now.
    pub more: bool,
    /// The changes, in log order.
    pub observations: Vec<Observation>,
}

/// Merges one sensor's windows into one period-long summary (for a
/// minimum-window policy): counts add up, port rows fold as roll-ups do
/// ([`fold::by_port`]), a source's rows fold together.
fn merge_period(parts: Vec<Summary>, start: Timestamp, end: Timestamp) -> Option<Summary> {
    let whole = Window { start, end };
    let mut parts = parts.into_iter();
    let mut out = parts.next()?;
    let rest: Vec<Summary> = parts.collect();
    if rest.is_empty() && out.window == whole {
        return Some(out);
    }
    let mut ports = Vec::new();
    let mut sources = SourceFold::default();
    ports.extend(
        std::mem::take(&mut out.ports)
            .into_iter()
            .map(|p| fold::RollRow::window(String::new(), String::new(), p)),
    );
    sources.add(std::mem::take(&mut out.sources));
    for s in rest {
        let mut c = out.classes.to_array();
        for (a, b) in c.iter_mut().zip(s.classes.to_array()) {
            *a += b;
        }
        out.classes = ClassTotals::from_array(c);
        for (a, b) in out.fingerprints.0.iter_mut().zip(s.fingerprints.0) {
            *a += b;
        }
        out.totals.packets += s.totals.packets;
        out.totals.bytes += s.totals.bytes;
        out.totals.sources_hll.merge(&s.totals.sources_hll);
        out.truncation.exact &= s.truncation.exact;
        ports.extend(
            s.ports
                .into_iter()
                .map(|p| fold::RollRow::window(String::new(), String::new(), p)),
        );
        sources.add(s.sources);
    }
    out.window = whole;
    out.totals.sources = out.totals.sources_hll.estimate();
    out.ports = fold::by_port(ports)
        .into_iter()
        .map(|r| PortRow {
            proto: fold::proto_of(r.proto),
            port: r.port as u16,
            packets: r.packets as u64,
            bytes: r.bytes as u64,
            sources: r.sources as u64,
            destinations: r.dsts as u64,
            sources_hll: r.hll,
        })
        .collect();
    out.ports.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then(a.proto.cmp(&b.proto))
            .then(a.port.cmp(&b.port))
    });
    out.sources = sources.finish();
    Some(out)
}

/// A source's folded row and its packets per port.
type Folded = (SourceRow, FxHashMap<(Proto, u16), u64>);

/// A source's rows of several windows folded into one.
#[derive(Default)]
struct SourceFold(FxHashMap<std::net::IpAddr, Folded>);

impl SourceFold {
    fn add(&mut self, rows: Vec<SourceRow>) {
        for r in rows {
            let (e, tally) = self.0.entry(r.ip).or_insert_with(|| {
                (
                    SourceRow {
                        packets: 0,
                        bytes: 0,
                        ..r.clone()
                    },
                    FxHashMap::default(),
                )
            });
            e.packets += r.packets;
            e.bytes += r.bytes;
            e.ports = e.ports.max(r.ports);
            e.destinations = e.destinations.max(r.destinations);
            e.classes.0 |= r.classes.0;
            e.fingerprints.0 |= r.fingerprints.0;
            e.first_seen = e.first_seen.min(r.first_seen);
            e.last_seen = e.last_seen.max(r.last_seen);
            for p in r.top_ports.iter() {
                *tally.entry((p.proto, p.port)).or_default() += p.packets;
            }
        }
    }

    /// The folded rows, busiest first, each with its busiest ports.
    fn finish(self) -> Vec<SourceRow> {
        let mut v: Vec<SourceRow> = self
            .0
            .into_values()
            .map(|(mut r, tally)| {
                let mut top = TopPorts::default();
                for p in PortCount::busiest(tally, TopPorts::CAP) {
                    top.push(p);
                }
                r.top_ports = top;
                r
            })
            .collect();
        v.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
        v
    }
}

/// Applies `policy` and anonymisation to a stored summary.
fn observation(
    seq: u64,
    s: Summary,
    policy: &Policy,
    allowed: Option<&[(Proto, u16)]>,
    anon: &Anonymiser,
) -> Observation {
    let ok = |proto: Proto, port: u16| allowed.is_none_or(|a| a.contains(&(proto, port)));
    let before = s.ports.len();
    let ports: Vec<PortRow> = s
        .ports
        .into_iter()
        .filter(|p| ok(p.proto, p.port))
        .collect();
    let sources = match policy.share {
        Share::Aggregates => Vec::new(),
        Share::AggregatesAndSources => s
            .sources
            .into_iter()
            .filter_map(|mut r| {
                if allowed.is_some() {
                    let mut top = TopPorts::default();
                    for p in r.top_ports.iter().filter(|p| ok(p.proto, p.port)) {
                        top.push(*p);
                    }
                    if top.is_empty() {
                        return None;
                    }
                    r.top_ports = top;
                }
                Some(r)
            })
            .collect(),
    };
    Observation {
        seq,
        sensor: anon.pseudonym(&s.sensor.id),
        country: s.sensor.country,
        darknet: s
            .sensor
            .darknet
            .iter()
            .filter_map(|p| anon.prefix(p))
            .collect(),
        monitored_ipv4: s.sensor.monitored_ipv4,
        window: s.window,
        classes: s.classes,
        fingerprints: s.fingerprints,
        totals: s.totals,
        exact: s.truncation.exact,
        ports_filtered: ports.len() != before,
        ports,
        sources,
    }
}

/// Builds the change document for `peer` after `cursor` (at most `limit`
/// observations), under the peer's export policy.
pub fn export(
    store: &dyn Store,
    origin: &str,
    peer: &PeerConfig,
    anon: &Anonymiser,
    cursor: u64,
    limit: usize,
    now: Timestamp,
) -> Result<Changes, FederationError> {
    let policy = &peer.export;
    let allowed = policy.allowed_ports().map_err(FederationError::Config)?;
    let changes = store.local_changes(cursor, limit)?;
    let full = changes.len() == limit;
    let period = policy.min_window_secs * 1_000_000;
    let mut next_cursor = cursor;
    let mut observations = Vec::new();
    let mut stopped = false;
    if period == 0 {
        for c in &changes {
            let parts = store.stored_summaries(&c.sensor, c.start, Timestamp(c.start.0 + 1))?;
            // A window retention already removed is skipped.
            if let Some(s) = parts.into_iter().next() {
                observations.push(observation(c.seq, s, policy, allowed.as_deref(), anon));
            }
            next_cursor = c.seq;
        }
    } else {
        // Whole periods per sensor, each once it is over; a late window
        // re-sends its period (the peer replaces it).
        let mut groups: Vec<(String, u64, u64)> = Vec::new(); // (sensor, period start, max seq)
        for c in &changes {
            let p = c.start.0 - c.start.0 % period;
            if p + period + PERIOD_GRACE_US > now.0 {
                stopped = true;
                break;
            }
            match groups.iter_mut().find(|g| g.0 == c.sensor && g.1 == p) {
                Some(g) => g.2 = c.seq,
                None => groups.push((c.sensor.clone(), p, c.seq)),
            }
            next_cursor = c.seq;
        }
        groups.sort_by_key(|g| g.2);
        for (sensor, p, seq) in groups {
            let parts = store.stored_summaries(&sensor, Timestamp(p), Timestamp(p + period))?;
            if let Some(s) = merge_period(parts, Timestamp(p), Timestamp(p + period)) {
                observations.push(observation(seq, s, policy, allowed.as_deref(), anon));
            }
        }
    }
    Ok(Changes {
        format: FORMAT.into(),
        version: VERSION,
        origin: origin.into(),
        peer: peer.id.clone(),
        share: policy.share,
        tlp: policy.tlp,
        cursor,
        next_cursor,
        more: full && !stopped,
        observations,
    })
}

/// The audit-log entry for a document served to `peer`.
pub fn audit_record(c: &Changes, now: Timestamp) -> ExportRecord {
    ExportRecord {
        time: now,
        peer: c.peer.clone(),
        share: c.share.as_str().into(),
        tlp: c.tlp.as_str().into(),
        cursor_from: c.cursor,
        cursor_to: c.next_cursor,
        observations: c.observations.len() as u64,
        port_rows: c.observations.iter().map(|o| o.ports.len() as u64).sum(),
        source_rows: c.observations.iter().map(|o| o.sources.len() as u64).sum(),
    }
}

/// Checks a peer's whole document before anything is stored.
pub fn validate(c: &Changes, peer: &str, asked: u64) -> Result<(), FederationError> {
    let bad = |msg: String| {
        Err(FederationError::Invalid {
            peer: peer.to_string(),
            msg,
        })
    };
    if c.format != FORMAT || c.version != VERSION {
        return bad(format!(
            "format '{}' version {} (this aggregator reads '{FORMAT}' version {VERSION})",
            c.format, c.version
        ));
    }
    if c.origin != peer {
        return bad(format!(
            "it claims to be '{}': a peer may only send its own observations",
            c.origin
        ));
    }
    if c.cursor != asked {
        return bad(format!(
            "answered cursor {} to a request for {asked}",
            c.cursor
        ));
    }
    if c.next_cursor < asked {
        return bad(format!(
            "next_cursor {} goes back before the requested {asked} (a replayed cursor)",
            c.next_cursor
        ));
    }
    if c.observations.len() > MAX_LIMIT {
        return bad(format!("more than {MAX_LIMIT} observations"));
    }
    let mut last = asked;
    for o in &c.observations {
        if o.seq <= last {
            return bad(format!(
                "observation seq {} is not after {last} (replayed or out of order)",
                o.seq
            ));
        }
        last = o.seq;
        check_observation(o).or_else(|m| bad(format!("observation {}: {m}", o.seq)))?;
    }
    if c.next_cursor < last {
        return bad(format!(
            "next_cursor {} is before its own observations",
            c.next_cursor
        ));
    }
    Ok(())
}

fn check_observation(o: &Observation) -> Result<(), String> {
    if !valid_id(&o.sensor) {
        return Err("sensor pseudonym must be 1-64 letters, digits, '.', '_' or '-'".into());
    }
    if o.country.len() != 2 || !o.country.chars().all(|c| c.is_ascii_uppercase()) {
        return Err(format!(
            "country '{}' is not an ISO 3166-1 alpha-2 code",
            o.country
        ));
    }
    if o.darknet.len() > 1024 || o.darknet.iter().any(|p| p.parse::<Prefix>().is_err()) {
        return Err("darknet must be a list of CIDR prefixes".into());
    }
    let w = o.window;
    if w.end <= w.start || w.end.0 - w.start.0 > 86_400_000_000 {
        return Err("window must satisfy start < end <= start + 1 day".into());
    }
    if w.start.0 > Timestamp::now().0 + 86_400_000_000 {
        return Err("window starts more than a day in the future".into());
    }
    if o.ports.len() > 5 * 65_536 || o.sources.len() > 10_000_000 {
        return Err("too many rows".into());
    }
    if o.classes.total() != o.totals.packets {
        return Err("class totals do not add up to totals.packets".into());
    }
    let port_packets: u64 = o.ports.iter().map(|p| p.packets).sum();
    if (!o.ports_filtered && port_packets != o.totals.packets)
        || (o.ports_filtered && port_packets > o.totals.packets)
    {
        return Err("port rows do not add up to totals.packets".into());
    }
    let tracked: u64 = o.sources.iter().map(|r| r.packets).sum();
    if tracked > o.totals.packets {
        return Err("source rows hold more packets than totals.packets".into());
    }
    if o.sources
        .iter()
        .any(|r| r.packets == 0 || r.first_seen > r.last_seen)
    {
        return Err("a source row is inconsistent".into());
    }
    Ok(())
}

/// Turns a validated observation from `peer` into a summary stored under
/// the sensor key `@peer/pseudonym`, keeping what `import` allows.
pub fn to_summary(peer: &str, o: Observation, import: &Policy) -> Summary {
    let allowed = import.allowed_ports().ok().flatten();
    let ok = |proto: Proto, port: u16| allowed.as_ref().is_none_or(|a| a.contains(&(proto, port)));
    let sources: Vec<SourceRow> = match import.share {
        Share::Aggregates => Vec::new(),
        Share::AggregatesAndSources => o
            .sources
            .into_iter()
            .filter(|r| allowed.is_none() || r.top_ports.iter().any(|p| ok(p.proto, p.port)))
            .collect(),
    };
    let tracked: u64 = sources.iter().map(|r| r.packets).sum();
    Summary {
        schema: SCHEMA,
        sensor: SensorInfo {
            id: peer_sensor_key(peer, &o.sensor),
            country: o.country,
            darknet: o.darknet,
            monitored_ipv4: o.monitored_ipv4,
        },
        window: o.window,
        capture: CaptureHealth::default(),
        classes: o.classes,
        fingerprints: o.fingerprints,
        totals: o.totals.clone(),
        truncation: Truncation {
            exact: o.exact,
            packets_untracked: o.totals.packets.saturating_sub(tracked),
            ..Default::default()
        },
        ports: o
            .ports
            .into_iter()
            .filter(|p| ok(p.proto, p.port))
            .collect(),
        sources,
    }
}

/// What one pull did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PullReport {
    /// Peer id.
    pub peer: String,
    /// Requests made.
    pub requests: u64,
    /// Observations stored (new or replacing an earlier version).
    pub imported: u64,
    /// Of those, how many replaced an earlier version.
    pub replaced: u64,
    /// Cursor after the pull.
    pub cursor: u64,
}

/// The HTTP client for pulling from `peer`: its private CA trusted and our
/// client certificate presented when configured.
pub fn peer_client(peer: &PeerConfig) -> Result<reqwest::Client, FederationError> {
    let read = |p: &PathBuf| {
        std::fs::read(p).map_err(|e| {
            FederationError::Config(format!(
                "peer '{}': cannot read '{}': {e}",
                peer.id,
                p.display()
            ))
        })
    };
    let mut b = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(120))
        .connect_timeout(std::time::Duration::from_secs(10));
    if let Some(ca) = &peer.ca_file {
        let c = reqwest::Certificate::from_pem(&read(ca)?)
            .map_err(|e| FederationError::Config(format!("peer '{}': CA file: {e}", peer.id)))?;
        b = b.add_root_certificate(c);
    }
    if let (Some(cert), Some(key)) = (&peer.client_cert, &peer.client_key) {
        let mut pem = read(cert)?;
        pem.push(b'\n');
        pem.extend(read(key)?);
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| {
            FederationError::Config(format!("peer '{}': client certificate: {e}", peer.id))
        })?;
        b = b.identity(id);
    }
    b.build()
        .map_err(|e| FederationError::Config(format!("peer '{}': HTTP client: {e}", peer.id)))
}

/// Reads the token we present to `peer`.
fn outbound_token(peer: &PeerConfig) -> Result<String, FederationError> {
    let path = peer
        .token_file
        .as_ref()
        .ok_or_else(|| FederationError::Config(format!("peer '{}' has no token_file", peer.id)))?;
    let t = std::fs::read_to_string(path).map_err(|e| {
        FederationError::Config(format!("cannot read token file '{}': {e}", path.display()))
    })?;
    let t = t.trim().to_string();
    if t.is_empty() {
        return Err(FederationError::Config(format!(
            "token file '{}' is empty",
            path.display()
        )));
    }
    Ok(t)
}

/// Pulls everything `peer` has after our stored cursor, request by request
/// (at most `max_requests`), storing each validated document before the
/// cursor moves. Records the outcome in the peer's sync state.
pub async fn pull_once(
    store: std::sync::Arc<dyn Store>,
    client: &reqwest::Client,
    fed: &FederationConfig,
    peer: &PeerConfig,
    max_requests: u64,
) -> Result<PullReport, FederationError> {
    let s = store.clone();
    let id = peer.id.clone();
    let mut state = blocking(move || {
        Ok(s.peer_states()?
            .into_iter()
            .find(|p| p.peer == id)
            .unwrap_or(PeerState {
                peer: id,
                ..Default::default()
            }))
    })
    .await?;
    let result = pull_inner(store.clone(), client, fed, peer, max_requests, &mut state).await;
    let now = Timestamp::now();
    state.last_pull = Some(now);
    match &result {
        Ok(_) => {
            state.last_success = Some(now);
            state.last_error.clear();
        }
        Err(e) => {
            state.errors += 1;
            state.last_error = e.to_string();
        }
    }
    let s = store.clone();
    let st = state.clone();
    blocking(move || Ok(s.save_peer_state(&st)?)).await?;
    result
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FederationError> + Send + 'static,
) -> Result<T, FederationError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| FederationError::Store(StoreError::Backend(format!("worker failed: {e}"))))?
}

async fn pull_inner(
    store: std::sync::Arc<dyn Store>,
    client: &reqwest::Client,
    fed: &FederationConfig,
    peer: &PeerConfig,
    max_requests: u64,
    state: &mut PeerState,
) -> Result<PullReport, FederationError> {
    let base = peer.url.as_ref().ok_or_else(|| {
        FederationError::Config(format!("peer '{}' has no url to pull from", peer.id))
    })?;
    let token = outbound_token(peer)?;
    let transport = |msg: String| FederationError::Transport {
        peer: peer.id.clone(),
        msg,
    };
    let limit_bytes = fed.max_document_mib << 20;
    let mut report = PullReport {
        peer: peer.id.clone(),
        cursor: state.cursor,
        ..Default::default()
    };
    for _ in 0..max_requests.max(1) {
        let asked = state.cursor;
        let url = format!(
            "{}/api/v1/federation/changes?cursor={asked}&limit={}",
            base.trim_end_matches('/'),
            fed.pull_batch
        );
        let resp = client
            .get(&url)
            .bearer_auth(&token)
            .send()
            .await
            .map_err(|e| transport(format!("request failed: {}", darkscope_common::causes(&e))))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(transport(format!(
                "HTTP {status}: {}",
                body.chars().take(300).collect::<String>()
            )));
        }
        if resp
            .content_length()
            .is_some_and(|n| n as usize > limit_bytes)
        {
            return Err(transport(format!(
                "document larger than {} MiB",
                fed.max_document_mib
            )));
        }
        let body = read_limited(resp, limit_bytes).await.map_err(transport)?;
        report.requests += 1;
        let changes: Changes =
            serde_json::from_slice(&body).map_err(|e| FederationError::Invalid {
                peer: peer.id.clone(),
                msg: format!("not a change document: {e}"),
            })?;
        validate(&changes, &peer.id, asked)?;
        let more = changes.more && changes.next_cursor > asked;
        let next = changes.next_cursor;
        let tlp = changes.tlp.as_str().to_string();
        let peer_id = peer.id.clone();
        let import = peer.import.clone();
        let s = store.clone();
        let (n, replaced, newest) = blocking(move || {
            let (mut n, mut replaced, mut newest) = (0u64, 0u64, None::<Timestamp>);
            for o in changes.observations {
                let end = o.window.end;
                let summary = to_summary(&peer_id, o, &import);
                let country = summary.sensor.country.clone();
                if s.import_summary(&summary, &country)? == Inserted::Replaced {
                    replaced += 1;
                }
                n += 1;
                newest = newest.max(Some(end));
            }
            Ok((n, replaced, newest))
        })
        .await?;
        state.cursor = next;
        state.imported += n;
        state.newest_window_end = state.newest_window_end.max(newest);
        state.tlp = tlp;
        report.imported += n;
        report.replaced += replaced;
        report.cursor = next;
        // Save progress after every stored document, so a crash re-pulls at
        // most one document (idempotently).
        let s = store.clone();
        let st = state.clone();
        blocking(move || Ok(s.save_peer_state(&st)?)).await?;
        if !more {
            break;
        }
    }
    Ok(report)
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
    {
        if out.len() + chunk.len() > limit {
            return Err(format!("document larger than {} MiB", limit >> 20));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Pulls from every peer with a url every `pull_interval_secs` while this
/// replica leads, until the task is dropped. Failures are logged and kept
/// in the peer's sync state.
pub async fn run_puller(
    store: std::sync::Arc<dyn Store>,
    fed: FederationConfig,
    metrics: std::sync::Arc<crate::metrics::Metrics>,
    leadership: std::sync::Arc<crate::cluster::Leadership>,
) {
    let mut clients = Vec::new();
    for peer in fed.peers.iter().filter(|p| p.url.is_some()) {
        match peer_client(peer) {
            Ok(c) => clients.push((peer, c)),
            Err(e) => log::error!("federation: {e}; not pulling from '{}'", peer.id),
        }
    }
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(fed.pull_interval_secs));
    loop {
        tick.tick().await;
        // One replica pulls for the cluster. A single aggregator leads from
        // its first background tick; wait for it at start.
        for _ in 0..50 {
            if leadership.is_leader() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        if !leadership.is_leader() {
            continue;
        }
        for (peer, client) in &clients {
            match pull_once(store.clone(), client, &fed, peer, 1000).await {
                Ok(r) => {
                    metrics.federation_pull(&peer.id, r.imported, true);
                    if r.imported > 0 {
                        log::info!(
                            "federation: imported {} observations from '{}' (cursor {})",
                            r.imported,
                            peer.id,
                            r.cursor
                        );
                    }
                }
                Err(e) => {
                    metrics.federation_pull(&peer.id, 0, false);
                    log::warn!("federation: pull from '{}' failed: {e}", peer.id);
                }
            }
        }
    }
}

/// The peer whose inbound token digest matches, compared in constant time
/// over every configured digest.
pub fn peer_by_token<'a>(fed: &'a FederationConfig, token: &str) -> Option<&'a PeerConfig> {
    let digest = hex(&crate::auth::token_hash(token));
    let mut found = None;
    for p in &fed.peers {
        for h in &p.inbound_token_sha256 {
            let h = h.to_ascii_lowercase();
            let diff = h
                .bytes()
                .zip(digest.bytes())
                .fold((h.len() ^ digest.len()) as u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 && found.is_none() {
                found = Some(p);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::hll::Hll;

    fn peer(share: Share, ports: &[&str], min_window_secs: u64) -> PeerConfig {
        PeerConfig {
            export: Policy {
                share,
                tlp: Tlp::Green,
                ports: ports.iter().map(|s| s.to_string()).collect(),
                min_window_secs,
            },
            ..PeerConfig::named("th")
        }
    }

    #[test]
    fn keys_parse_and_pseudonyms_are_stable_and_keyed() {
        assert!(parse_key("zz").is_none());
        let k = parse_key(&"ab".repeat(32)).unwrap();
        let a = Anonymiser::new(&k);
        assert_eq!(a.pseudonym("jp-01"), a.pseudonym("jp-01"));
        assert_ne!(a.pseudonym("jp-01"), a.pseudonym("jp-02"));
        let b = Anonymiser::new(&[1u8; 32]);
        assert_ne!(a.pseudonym("jp-01"), b.pseudonym("jp-01"));
        assert!(a.pseudonym("jp-01").starts_with("s-") && !a.pseudonym("jp-01").contains("jp"));
    }

    #[test]
    fn a_key_that_leaves_a_block_unchanged_is_reported() {
        let block = "198.19.0.0/16";
        let keys: Vec<[u8; 32]> = (0u8..=255)
            .map(|i| {
                let mut k = [i; 32];
                k[31] = 7;
                k
            })
            .collect();
        let keeps = |k: &[u8; 32]| Anonymiser::new(k).prefix(block).as_deref() == Some(block);
        let first_bad = keys.iter().position(keeps).expect("about 2 in 256 keys");
        let first_good = keys.iter().position(|k| !keeps(k)).unwrap();
        let (same, other) = (
            Anonymiser::new(&keys[first_bad]),
            Anonymiser::new(&keys[first_good]),
        );
        assert_eq!(same.prefix(block).as_deref(), Some(block));
        assert_ne!(other.prefix(block).as_deref(), Some(block));
        // keygen --avoid skips such a key.
        let b: Prefix = block.parse().unwrap();
        let picked = key_avoiding(&[b], keys[first_bad..].iter().copied()).unwrap();
        assert_ne!(picked, keys[first_bad]);
        assert_ne!(
            Anonymiser::new(&picked).prefix(block).as_deref(),
            Some(block)
        );
        assert_eq!(key_avoiding(&[b], [keys[first_bad]]), None);
        assert_eq!(key_avoiding(&[], [keys[first_bad]]), Some(keys[first_bad]));
        assert_eq!(same.unchanged_blocks(), [block]);
        assert_eq!(same.prefix("198.19.0.0/16").as_deref(), Some(block));
        assert_eq!(same.unchanged_blocks(), [block], "reported once");
        assert!(other.unchanged_blocks().is_empty());
    }

    #[test]
    fn policies_validate_with_clear_messages() {
        let mut f = FederationConfig {
            id: "jp".into(),
            key_file: Some("k".into()),
            peers: vec![peer(Share::Aggregates, &["tcp/23"], 0)],
            ..Default::default()
        };
        f.validate().unwrap();
        f.peers[0].export.ports = vec!["tcp:23".into()];
        assert!(f.validate().unwrap_err().to_string().contains("PROTO/PORT"));
        f.peers[0].export.ports.clear();
        f.peers.push(f.peers[0].clone());
        assert!(f.validate().unwrap_err().to_string().contains("twice"));
        f.peers.pop();
        f.peers[0].url = Some("http://x".into());
        assert!(f.validate().unwrap_err().to_string().contains("token_file"));
        let one: PeerConfig = toml::from_str(&format!(
            "id = \"a\"\ninbound_token_sha256 = \"{}\"",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(one.inbound_token_sha256.len(), 1);
        let p: Policy =
            toml::from_str("share = \"aggregates+sources\"\ntlp = \"amber+strict\"").unwrap();
        assert_eq!(
            (p.share, p.tlp),
            (Share::AggregatesAndSources, Tlp::AmberStrict)
        );
        assert!(toml::from_str::<Policy>("share = \"everything\"").is_err());
    }

    #[test]
    fn peer_tokens_match_only_their_own_digest() {
        let t1 = crate::auth::new_token();
        let t2 = crate::auth::new_token();
        let mut a = peer(Share::Aggregates, &[], 0);
        // Two digests while a token is rotated: both open.
        let t0 = crate::auth::new_token();
        a.inbound_token_sha256 = vec![
            hex(&crate::auth::token_hash(&t1)).to_uppercase(),
            hex(&crate::auth::token_hash(&t0)),
        ];
        let mut b = peer(Share::Aggregates, &[], 0);
        b.id = "my".into();
        b.inbound_token_sha256 = vec![hex(&crate::auth::token_hash(&t2))];
        let f = FederationConfig {
            peers: vec![a, b],
            ..Default::default()
        };
        assert_eq!(peer_by_token(&f, &t1).unwrap().id, "th");
        assert_eq!(peer_by_token(&f, &t0).unwrap().id, "th");
        assert_eq!(peer_by_token(&f, &t2).unwrap().id, "my");
        assert!(peer_by_token(&f, "dst_nope").is_none());
    }

    fn doc(origin: &str, cursor: u64, seqs: &[u64], next: u64) -> Changes {
        let o = Observation {
            seq: 0,
            sensor: "s-0123".into(),
            country: "TH".into(),
            darknet: vec!["10.9.0.0/16".into()],
            monitored_ipv4: 65536,
            window: Window {
                start: Timestamp(1_763_683_200_000_000),
                end: Timestamp(1_763_683_260_000_000),
            },
            classes: ClassTotals {
                tcp_syn: 3,
                ..Default::default()
            },
            fingerprints: Default::default(),
            totals: Totals {
                packets: 3,
                ..Default::default()
            },
            exact: true,
            ports_filtered: false,
            ports: vec![PortRow {
                proto: Proto::Tcp,
                port: 23,
                packets: 3,
                bytes: 120,
                sources: 1,
                destinations: 1,
                sources_hll: Hll::new(),
            }],
            sources: vec![],
        };
        Changes {
            format: FORMAT.into(),
            version: VERSION,
            origin: origin.into(),
            peer: "jp".into(),
            share: Share::Aggregates,
            tlp: Tlp::Amber,
            cursor,
            next_cursor: next,
            more: false,
            observations: seqs
                .iter()
                .map(|&seq| Observation { seq, ..o.clone() })
                .collect(),
        }
    }

    #[test]
    fn bad_documents_are_refused_with_the_reason() {
        validate(&doc("th", 5, &[6, 9], 9), "th", 5).unwrap();
        let why = |c: Changes| validate(&c, "th", 5).unwrap_err().to_string();
        assert!(why(doc("my", 5, &[6], 6)).contains("claims to be 'my'"));
        assert!(why(doc("th", 5, &[5], 5)).contains("replayed"));
        assert!(why(doc("th", 5, &[7, 6], 7)).contains("replayed or out of order"));
        assert!(why(doc("th", 5, &[], 2)).contains("replayed cursor"));
        assert!(why(doc("th", 4, &[6], 6)).contains("cursor 4"));
        let mut c = doc("th", 5, &[6], 6);
        c.observations[0].totals.packets = 4;
        assert!(why(c).contains("class totals"));
        let mut c = doc("th", 5, &[6], 6);
        c.observations[0].country = "thailand".into();
        assert!(why(c).contains("alpha-2"));
        let mut c = doc("th", 5, &[6], 6);
        c.version = 2;
        assert!(why(c).contains("version 2"));
    }

    #[test]
    fn observation_applies_policy_and_anonymises() {
        let anon = Anonymiser::new(&[9u8; 32]);
        let mut hll = Hll::new();
        hll.insert(darkscope_common::Addr::v4(1));
        let row = |port: u16, packets: u64| PortRow {
            proto: Proto::Tcp,
            port,
            packets,
            bytes: 40 * packets,
            sources: 1,
            destinations: 1,
            sources_hll: hll.clone(),
        };
        let mut top = TopPorts::default();
        top.push(PortCount {
            proto: Proto::Tcp,
            port: 445,
            packets: 2,
        });
        let s = Summary {
            schema: SCHEMA,
            sensor: SensorInfo {
                id: "jp-01".into(),
                country: "JP".into(),
                darknet: vec!["198.19.0.0/16".into()],
                monitored_ipv4: 65536,
            },
            window: Window {
                start: Timestamp(0),
                end: Timestamp(60_000_000),
            },
            capture: Default::default(),
            classes: ClassTotals {
                tcp_syn: 5,
                ..Default::default()
            },
            fingerprints: Default::default(),
            totals: Totals {
                packets: 5,
                ..Default::default()
            },
            truncation: Truncation {
                exact: true,
                ..Default::default()
            },
            ports: vec![row(23, 3), row(445, 2)],
            sources: vec![SourceRow {
                ip: "192.0.2.1".parse().unwrap(),
                packets: 2,
                bytes: 80,
                ports: 1,
                destinations: 1,
                top_ports: top,
                classes: Default::default(),
                fingerprints: Default::default(),
                first_seen: Timestamp(1),
                last_seen: Timestamp(2),
            }],
        };
        let p = peer(Share::Aggregates, &[], 0);
        let o = observation(1, s.clone(), &p.export, None, &anon);
        assert!(o.sources.is_empty());
        assert_eq!(o.sensor, anon.pseudonym("jp-01"));
        assert_ne!(o.darknet, vec!["198.19.0.0/16".to_string()]);
        assert!(o.darknet[0].ends_with("/16"));
        let text = serde_json::to_string(&o).unwrap();
        assert!(
            !text.contains("192.0.2.1") && !text.contains("jp-01") && !text.contains("198.19.")
        );
        // Allow-list tcp/23 with sources: the 445 row and the 445-only source go.
        let p = peer(Share::AggregatesAndSources, &["tcp/23"], 0);
        let allowed = p.export.allowed_ports().unwrap();
        let o = observation(1, s.clone(), &p.export, allowed.as_deref(), &anon);
        assert_eq!(o.ports.len(), 1);
        assert!(o.ports_filtered && o.sources.is_empty());
        check_observation(&o).unwrap();
        let p = peer(Share::AggregatesAndSources, &[], 0);
        let o = observation(1, s, &p.export, None, &anon);
        assert_eq!(o.sources.len(), 1);
        // Imports honour our own policy too.
        let kept = to_summary("th", o.clone(), &Policy::default());
        assert!(kept.sources.is_empty() && kept.sensor.id.starts_with("@th/"));
        assert_eq!(kept.truncation.packets_untracked, 5);
    }

    #[test]
    fn periods_merge_counts_and_sketches() {
        let mk = |start: u64, ip: u32| {
            let mut h = Hll::new();
            h.insert(darkscope_common::Addr::v4(ip));
            let mut top = TopPorts::default();
            top.push(PortCount {
                proto: Proto::Tcp,
                port: 23,
                packets: 1,
            });
            Summary {
                schema: SCHEMA,
                sensor: SensorInfo {
                    id: "a".into(),
                    country: "JP".into(),
                    darknet: vec![],
                    monitored_ipv4: 1,
                },
                window: Window {
                    start: Timestamp(start),
                    end: Timestamp(start + 60_000_000),
                },
                capture: Default::default(),
                classes: ClassTotals {
                    tcp_syn: 1,
                    ..Default::default()
                },
                fingerprints: Default::default(),
                totals: Totals {
                    packets: 1,
                    bytes: 40,
                    sources: 1,
                    sources_hll: h.clone(),
                },
                truncation: Truncation {
                    exact: true,
                    ..Default::default()
                },
                ports: vec![PortRow {
                    proto: Proto::Tcp,
                    port: 23,
                    packets: 1,
                    bytes: 40,
                    sources: 1,
                    destinations: 1,
                    sources_hll: h,
                }],
                sources: vec![SourceRow {
                    ip: darkscope_common::Addr::v4(ip).to_ip(),
                    packets: 1,
                    bytes: 40,
                    ports: 1,
                    destinations: 1,
                    top_ports: top,
                    classes: Default::default(),
                    fingerprints: Default::default(),
                    first_seen: Timestamp(start),
                    last_seen: Timestamp(start),
                }],
            }
        };
        let m = merge_period(
            vec![mk(0, 1), mk(60_000_000, 1), mk(120_000_000, 2)],
            Timestamp(0),
            Timestamp(3_600_000_000),
        )
        .unwrap();
        assert_eq!(m.totals.packets, 3);
        assert_eq!(m.totals.sources, 2);
        assert_eq!(m.ports.len(), 1);
        assert_eq!((m.ports[0].packets, m.ports[0].sources), (3, 2));
        assert_eq!(m.sources.len(), 2);
        assert_eq!(m.sources[0].packets, 2);
        assert_eq!(m.sources[0].top_ports[0].packets, 2);
        assert_eq!(m.window.end, Timestamp(3_600_000_000));
    }
}
