//! Infection-alert feeds for ISPs. A subscriber owns prefixes; a source seen
//! scanning the darknet belongs to the subscriber with the **longest**
//! matching prefix among all subscribers (so a customer's /24 inside an
//! ISP's /16 is the customer's alone), found with a prefix trie.
//!
//! Feeds are built per UTC day from the stored source rows (hourly roll-ups
//! and raw windows), so each feed holds exactly the hosts its subscriber
//! owns. Sources whose traffic is only backscatter are tagged `backscatter`:
//! they are victims of spoofed attacks, not infected hosts.
//!
//! CSV layout: Shadowserver's `event4_honeypot_darknet` columns, one row per
//! (source, port), so IntelMQ/AbuseIO parsers read it unchanged. Filled:
//! `timestamp` (first seen that day, `YYYY-MM-DD HH:MM:SS`, UTC), `protocol`,
//! `src_ip`, `dst_port` (port or ICMP type), `dst_geo` (country of the
//! sensor that saw it), `public_source` (`darkscope`), `infection` and
//! `family` (a fingerprint such as `mirai`, when the source carried one),
//! `tag` (`darknet-scan` or `backscatter`), `event_id` (deterministic),
//! `count` (packets to that port). The rest stay empty.

use crate::enrich::AsnTable;
use crate::store::{FeedCursor, FeedMatch, FeedRow, Store, StoreError, SubscriberRecord};
use darkscope_common::wire::{PortCount, Summary};
use darkscope_common::{Addr, ClassSet, FingerprintSet, PacketClass, Timestamp};
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// The Shadowserver `event4_honeypot_darknet` header, in order.
pub const COLUMNS: [&str; 31] = [
    "timestamp",
    "protocol",
    "src_ip",
    "src_port",
    "src_asn",
    "src_geo",
    "src_region",
    "src_city",
    "src_hostname",
    "src_naics",
    "src_sector",
    "device_vendor",
    "device_type",
    "device_model",
    "dst_ip",
    "dst_port",
    "dst_asn",
    "dst_geo",
    "dst_region",
    "dst_city",
    "dst_hostname",
    "dst_naics",
    "dst_sector",
    "public_source",
    "infection",
    "family",
    "tag",
    "application",
    "version",
    "event_id",
    "count",
];

/// `[feeds]`: how feeds are built and published.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FeedsConfig {
    /// An `ip2asn`-style TSV (optionally `.gz`) or a MaxMind ASN database
    /// (`.mmdb`) mapping addresses to AS numbers (and, the TSV, countries):
    /// enables ASN subscriptions, fills `src_asn` and `src_geo`, and the
    /// detector's per-country and per-AS series.
    pub asn_table: Option<PathBuf>,
    /// A MaxMind country database (`.mmdb`): its located country replaces
    /// the AS's registration country.
    pub country_mmdb: Option<PathBuf>,
    /// Name of the organisation running this aggregator, as STIX objects
    /// credit it (`identity`, and `where_sighted_refs` of sightings).
    pub operator: String,
    /// TLP marking of subscribers' STIX objects: `white`, `green`, `amber`
    /// (default) or `red`.
    pub tlp: String,
    /// Also offer every subscriber a shared TAXII collection of aggregate
    /// indicators (the detector's surge alerts; no host addresses).
    pub shared_collection: bool,
    /// Seconds between webhook digests of new events to subscribers that
    /// have a webhook.
    pub push_interval_secs: u64,
    /// The URL clients reach this server at (e.g. behind a proxy), used in
    /// TAXII discovery; by default the request's `Host` header.
    pub public_url: Option<String>,
}

impl Default for FeedsConfig {
    fn default() -> Self {
        FeedsConfig {
            asn_table: None,
            country_mmdb: None,
            operator: "darkscope operator".into(),
            tlp: "amber".into(),
            shared_collection: false,
            push_interval_secs: 300,
            public_url: None,
        }
    }
}

impl FeedsConfig {
    /// Checks values.
    pub fn validate(&self) -> Result<(), String> {
        if !["white", "green", "amber", "red"].contains(&self.tlp.as_str()) {
            return Err(format!(
                "[feeds] tlp must be white, green, amber or red, not '{}'",
                self.tlp
            ));
        }
        if self.operator.trim().is_empty() || self.operator.len() > 200 {
            return Err("[feeds] operator must be a name of 1-200 characters".into());
        }
        if let Some(u) = &self.public_url {
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                return Err(format!(
                    "[feeds] public_url must start with http:// or https://, not '{u}'"
                ));
            }
        }
        if !(1..=86_400).contains(&self.push_interval_secs) {
            return Err("[feeds] push_interval_secs must be 1-86400".into());
        }
        Ok(())
    }
}

/// How long ingest reuses the subscriptions it read before reading them
/// again (subscribers are managed by another process, the CLI).
const OWNERS_TTL: Duration = Duration::from_secs(5);

/// Feed settings and the subscriptions that ingest matches against.
pub struct FeedState {
    /// Settings.
    pub cfg: FeedsConfig,
    /// The loaded ASN table, if configured.
    pub table: Option<Arc<AsnTable>>,
    /// Whether the listener speaks TLS (for URLs we hand out).
    pub tls: bool,
    owners: RwLock<(Instant, Arc<Owners>)>,
    refreshing: Mutex<()>,
}

impl FeedState {
    /// Loads the ASN table (if any). `tls`: the listener speaks TLS.
    pub fn new(cfg: FeedsConfig, tls: bool) -> Result<FeedState, crate::enrich::EnrichError> {
        let mut table = cfg.asn_table.as_deref().map(AsnTable::load).transpose()?;
        if let Some(c) = &cfg.country_mmdb {
            table = Some(table.unwrap_or_default().with_country_db(c)?);
        }
        let table = table.map(Arc::new);
        Ok(FeedState {
            cfg,
            table,
            tls,
            owners: RwLock::new((Instant::now() - OWNERS_TTL * 2, Arc::new(Owners::default()))),
            refreshing: Mutex::new(()),
        })
    }

    /// The current subscriptions, read again from the store when older than
    /// a few seconds. A failed read or an invalid set keeps the last good one.
    pub fn owners(&self, store: &dyn Store) -> Arc<Owners> {
        let (at, cur) = {
            let g = self.owners.read().unwrap_or_else(|p| p.into_inner());
            (g.0, g.1.clone())
        };
        if at.elapsed() < OWNERS_TTL {
            return cur;
        }
        // One caller refreshes; the others go on with what there is.
        let Ok(_one) = self.refreshing.try_lock() else {
            return cur;
        };
        let fresh = store
            .subscribers()
            .map_err(|e| e.to_string())
            .and_then(|subs| {
                // Rebuild the tries only when the subscriptions changed.
                let print = fingerprint(&subs);
                if print == cur.fingerprint {
                    return Ok(None);
                }
                let mut o = Owners::build(&subs, self.table.clone()).map_err(|e| e.to_string())?;
                o.fingerprint = print;
                log::info!(
                    "feed subscriptions loaded: {} subscribers, {} prefixes",
                    subs.iter().filter(|s| s.revoked.is_none()).count(),
                    o.prefixes()
                );
                Ok(Some(o))
            });
        let mut g = self.owners.write().unwrap_or_else(|p| p.into_inner());
        g.0 = Instant::now();
        match fresh {
            Ok(Some(o)) => g.1 = Arc::new(o),
            Ok(None) => {}
            Err(e) => {
                log::error!("feed subscriptions not reloaded (keeping the previous set): {e}")
            }
        }
        g.1.clone()
    }
}

/// Most host-days in one webhook digest.
const DIGEST_MAX: usize = 1000;
/// Most digests sent to one subscriber per round (the rest wait a round).
const DIGESTS_PER_ROUND: usize = 20;
/// Delivery attempts per digest within a round.
const PUSH_ATTEMPTS: u32 = 3;

/// Pushes digests of new feed events to subscribers' webhooks every
/// `push_interval_secs`, on the leader replica only. A digest's position is
/// saved only after the subscriber answered 2xx, so a failed digest is sent
/// again (with the same events and whatever arrived since) next time.
pub async fn run_pusher(
    store: Arc<dyn Store>,
    feeds: Arc<FeedState>,
    metrics: Arc<crate::metrics::Metrics>,
    leadership: Arc<crate::cluster::Leadership>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            log::error!("feed webhooks disabled: cannot build the HTTP client: {e}");
            return;
        }
    };
    let mut tick = tokio::time::interval(Duration::from_secs(feeds.cfg.push_interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if !leadership.is_leader() {
            continue;
        }
        let s = store.clone();
        let subs = match tokio::task::spawn_blocking(move || s.subscribers()).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => {
                log::warn!("feed webhooks: cannot read subscribers: {e}");
                continue;
            }
            Err(_) => continue,
        };
        for sub in subs
            .into_iter()
            .filter(|s| s.revoked.is_none() && s.webhook.is_some())
        {
            push_subscriber(&client, &store, &sub, &metrics).await;
        }
    }
}

/// Sends one subscriber the digests it has not accepted yet.
async fn push_subscriber(
    client: &reqwest::Client,
    store: &Arc<dyn Store>,
    sub: &SubscriberRecord,
    metrics: &crate::metrics::Metrics,
) {
    let Some(url) = sub.webhook.clone() else {
        return;
    };
    for _ in 0..DIGESTS_PER_ROUND {
        let (s, id) = (store.clone(), sub.id.clone());
        let page = tokio::task::spawn_blocking(move || {
            let after = s.push_cursor(&id)?.unwrap_or_default();
            let page = changes(s.as_ref(), &id, &after, DIGEST_MAX + 1)?;
            Ok::<_, StoreError>(page)
        })
        .await;
        let mut page = match page {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                log::warn!("feed webhook of '{}': {e}", sub.id);
                return;
            }
            Err(_) => return,
        };
        if page.is_empty() {
            return;
        }
        let more = page.len() > DIGEST_MAX;
        page.truncate(DIGEST_MAX);
        let Some(next) = page.last().map(|(c, _)| c.clone()) else {
            return;
        };
        let events: Vec<&FeedEvent> = page.iter().map(|(_, e)| e).collect();
        let body = match serde_json::to_vec(&serde_json::json!({
            "type": "feed-digest",
            "subscriber": sub.id,
            "events": events,
            "next": cursor_text(&next),
            "more": more,
        })) {
            Ok(b) => b,
            Err(_) => return,
        };
        if !crate::webhook::post_signed(client, &url, &sub.webhook_key, &body, PUSH_ATTEMPTS).await
        {
            metrics
                .feed_push_failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            log::warn!(
                "feed digest of {} host-days to subscriber '{}' not delivered; retried next round",
                events.len(),
                sub.id
            );
            return;
        }
        metrics
            .feed_pushes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (s, id) = (store.clone(), sub.id.clone());
        match tokio::task::spawn_blocking(move || s.save_push_cursor(&id, &next)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                log::warn!("feed webhook position of '{}' not saved: {e}", sub.id);
                return;
            }
            Err(_) => return,
        }
        if !more {
            return;
        }
    }
}

/// Which subscriber owns an address: the longest matching prefix across
/// all active subscribers; failing that, when an ASN table is loaded, the
/// subscriber owning the address's AS.
#[derive(Default)]
pub struct Owners {
    v4: PrefixMap<Ipv4Net, String>,
    v6: PrefixMap<Ipv6Net, String>,
    asns: rustc_hash::FxHashMap<u32, String>,
    table: Option<Arc<AsnTable>>,
    /// Hash of the subscriptions these were built from.
    fingerprint: u64,
}

/// A hash of what ownership depends on: ids, resources, revocations.
fn fingerprint(subs: &[SubscriberRecord]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    for s in subs {
        (&s.id, &s.prefixes, &s.asns, s.revoked.is_some()).hash(&mut h);
    }
    // Never 0: that is the empty start value.
    h.finish() | 1
}

/// Why a set of subscriptions is not valid.
#[derive(Debug, thiserror::Error)]
pub enum BadSubscription {
    /// A prefix that does not parse.
    #[error("'{0}' is not a prefix such as 192.0.2.0/24 or 2001:db8::/32")]
    Prefix(String),
    /// A prefix or AS claimed by two subscribers (ownership would be ambiguous).
    #[error("{what} is already owned by subscriber '{owner}'")]
    Taken {
        /// The prefix or AS.
        what: String,
        /// Its owner.
        owner: String,
    },
}

impl Owners {
    /// From the subscribers (revoked ones are skipped) and the optional ASN
    /// table. The same prefix or AS in two subscribers is an error.
    pub fn build(
        subs: &[SubscriberRecord],
        table: Option<Arc<AsnTable>>,
    ) -> Result<Owners, BadSubscription> {
        let mut o = Owners {
            table,
            ..Default::default()
        };
        let taken = |what: String, owner: &str| BadSubscription::Taken {
            what,
            owner: owner.to_string(),
        };
        for s in subs.iter().filter(|s| s.revoked.is_none()) {
            for p in &s.prefixes {
                let net = p
                    .parse::<ipnet::IpNet>()
                    .map_err(|_| BadSubscription::Prefix(p.clone()))?
                    .trunc();
                let before = match net {
                    ipnet::IpNet::V4(n) => o.v4.insert(n, s.id.clone()),
                    ipnet::IpNet::V6(n) => o.v6.insert(n, s.id.clone()),
                };
                if let Some(b) = before.filter(|b| *b != s.id) {
                    return Err(taken(format!("prefix {net}"), &b));
                }
            }
            for a in &s.asns {
                if let Some(b) = o.asns.insert(*a, s.id.clone()).filter(|b| *b != s.id) {
                    return Err(taken(format!("AS{a}"), &b));
                }
            }
        }
        Ok(o)
    }

    /// Number of prefixes.
    pub fn prefixes(&self) -> usize {
        self.v4.len() + self.v6.len()
    }

    /// The owner of `a`, if any.
    pub fn owner(&self, a: Addr) -> Option<&str> {
        let info = self.table.as_ref().and_then(|t| t.lookup(a));
        self.owner_given(a, info.map(|i| i.asn))
    }

    /// The owner of `a` whose AS (from the table) is `asn`.
    fn owner_given(&self, a: Addr, asn: Option<u32>) -> Option<&str> {
        let by_prefix = match a.to_ip() {
            IpAddr::V4(v4) => self.v4.get_lpm(&Ipv4Net::from(v4)).map(|(_, id)| id),
            IpAddr::V6(v6) => self.v6.get_lpm(&Ipv6Net::from(v6)).map(|(_, id)| id),
        };
        by_prefix
            .or_else(|| self.asns.get(&asn?))
            .map(String::as_str)
    }

    /// The sources of `s` that subscribers own, with their AS (if known).
    pub fn matches(&self, s: &Summary) -> Vec<FeedMatch> {
        if self.prefixes() == 0 && self.asns.is_empty() {
            return Vec::new();
        }
        s.sources
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                let a = Addr::from(r.ip);
                let info = self.table.as_ref().and_then(|t| t.lookup(a));
                let owner = self.owner_given(a, info.map(|x| x.asn))?;
                Some(FeedMatch {
                    subscriber: owner.to_string(),
                    source: i,
                    asn: info.map(|x| x.asn).unwrap_or(0),
                    geo: info.map(|x| x.country.to_string()).unwrap_or_default(),
                })
            })
            .collect()
    }
}

/// The key that signs a subscriber's webhook digests: derived from its
/// token, so the subscriber can compute it and no second secret has to be
/// handed over: `SHA-256("darkscope feed webhook\0" || token)`.
pub fn webhook_key(token: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(b"darkscope feed webhook\0");
    h.update(token.trim().as_bytes());
    h.finalize().to_vec()
}

/// One host in a subscriber's feed for one day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedEvent {
    /// The host.
    pub ip: String,
    /// The UTC day (`YYYY-MM-DD`).
    pub date: String,
    /// First packet that day.
    pub first_seen: Timestamp,
    /// Last packet that day.
    pub last_seen: Timestamp,
    /// When the aggregator last added to this event.
    pub updated: Timestamp,
    /// When the aggregator first recorded this event.
    #[serde(skip)]
    pub first_stored: Timestamp,
    /// Packets to the darknet that day.
    pub packets: u64,
    /// Most distinct darknet addresses it reached in one window at one
    /// sensor (a lower bound for the day).
    pub destinations: u64,
    /// Its ports, busiest first.
    pub ports: Vec<PortCount>,
    /// Sensors that saw it.
    pub sensors: Vec<String>,
    /// Countries of those sensors.
    pub countries: Vec<String>,
    /// Its AS number, when an ASN table is configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub asn: Option<u32>,
    /// The country of its AS, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub geo: Option<String>,
    /// Fingerprints it carried (e.g. mirai).
    pub fingerprints: FingerprintSet,
    /// Classes of its packets.
    pub classes: ClassSet,
    /// `darknet-scan`, or `backscatter` when all it sent were replies.
    pub tag: String,
}

impl FeedEvent {
    /// The tag for a set of classes.
    pub fn tag_for(classes: ClassSet) -> &'static str {
        if classes.0 != 0 && classes.iter().all(|c| c == PacketClass::Backscatter) {
            "backscatter"
        } else {
            "darknet-scan"
        }
    }

    /// True when the host only sent replies (a victim of spoofing, not a scanner).
    pub fn is_backscatter(&self) -> bool {
        self.tag == "backscatter"
    }
}

/// Packets per (protocol, port).
type PortTally = rustc_hash::FxHashMap<(darkscope_common::Proto, u16), u64>;

/// Folds stored rows into one event per (day, host), busiest first.
pub fn fold(rows: Vec<FeedRow>) -> Vec<FeedEvent> {
    use rustc_hash::FxHashMap;
    let mut by: FxHashMap<(Timestamp, Addr), (FeedEvent, PortTally)> = FxHashMap::default();
    for r in rows {
        let (e, ports) = by.entry((r.day, r.ip)).or_insert_with(|| {
            (
                FeedEvent {
                    ip: r.ip.to_string(),
                    date: r.day.to_string()[..10].to_string(),
                    first_seen: r.first,
                    last_seen: r.last,
                    updated: r.stored_at,
                    first_stored: r.stored_at,
                    packets: 0,
                    destinations: 0,
                    ports: Vec::new(),
                    sensors: Vec::new(),
                    countries: Vec::new(),
                    asn: (r.asn != 0).then_some(r.asn),
                    geo: Some(r.geo.clone()).filter(|g| !g.is_empty()),
                    fingerprints: FingerprintSet::default(),
                    classes: ClassSet::default(),
                    tag: String::new(),
                },
                FxHashMap::default(),
            )
        });
        e.first_seen = e.first_seen.min(r.first);
        e.last_seen = e.last_seen.max(r.last);
        e.updated = e.updated.max(r.stored_at);
        e.first_stored = e.first_stored.min(r.stored_at);
        e.packets += r.packets;
        e.destinations = e.destinations.max(r.destinations);
        e.fingerprints.0 |= r.fingerprints.0;
        e.classes.0 |= r.classes.0;
        if !e.sensors.contains(&r.sensor) {
            e.sensors.push(r.sensor);
        }
        if !r.country.is_empty() && !e.countries.contains(&r.country) {
            e.countries.push(r.country);
        }
        for p in r.ports {
            *ports.entry((p.proto, p.port)).or_default() += p.packets;
        }
    }
    let mut out: Vec<FeedEvent> = by
        .into_values()
        .map(|(mut e, ports)| {
            e.ports = PortCount::busiest(ports, 20);
            e.sensors.sort();
            e.countries.sort();
            e.tag = FeedEvent::tag_for(e.classes).to_string();
            e
        })
        .collect();
    out.sort_by(|a, b| {
        b.packets
            .cmp(&a.packets)
            .then(a.date.cmp(&b.date))
            .then(a.ip.cmp(&b.ip))
    });
    out
}

/// The feed of `subscriber` for the UTC day starting at `day`: every host
/// it owned when the data arrived that sent to the darknet that day,
/// busiest first.
pub fn build(
    store: &dyn Store,
    subscriber: &str,
    day: Timestamp,
) -> Result<Vec<FeedEvent>, StoreError> {
    Ok(fold(store.feed_day(subscriber, day)?))
}

/// The host-days of `subscriber` updated after `after`, oldest update
/// first, at most `limit`, each with its cursor (pass the last one back to
/// continue).
pub fn changes(
    store: &dyn Store,
    subscriber: &str,
    after: &FeedCursor,
    limit: usize,
) -> Result<Vec<(FeedCursor, FeedEvent)>, StoreError> {
    Ok(store
        .feed_changes(subscriber, after, limit)?
        .into_iter()
        .filter_map(|(k, rows)| Some((k, fold(rows).into_iter().next()?)))
        .collect())
}

/// A cursor as the opaque text handed to clients.
pub fn cursor_text(c: &FeedCursor) -> String {
    format!("{}_{}_{}", c.stored_at, c.day, c.ip)
}

/// Parses [`cursor_text`]; `None` when it is not one.
pub fn parse_cursor(s: &str) -> Option<FeedCursor> {
    let mut it = s.splitn(3, '_');
    let c = FeedCursor {
        stored_at: it.next()?.parse().ok()?,
        day: it.next()?.parse().ok()?,
        ip: it.next()?.to_string(),
    };
    (c.ip.parse::<IpAddr>().is_ok() || c.ip.is_empty()).then_some(c)
}

/// The cursor just before everything updated after `t`.
pub fn cursor_after(t: Timestamp) -> FeedCursor {
    FeedCursor {
        stored_at: t.0,
        day: i64::MAX as u64,
        ip: String::new(),
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

/// The Shadowserver-style CSV of `events`: one row per (host, port).
pub fn to_csv(events: &[FeedEvent]) -> String {
    let mut out = COLUMNS.join(",");
    out.push('\n');
    for e in events {
        let ts = e.first_seen.to_string();
        let ts = format!("{} {}", &ts[..10], &ts[11..19]);
        let family = e
            .fingerprints
            .iter()
            .next()
            .map(|f| f.as_str())
            .unwrap_or("");
        for p in &e.ports {
            let event_id = format!(
                "{:016x}",
                darkscope_common::hll::mix64(
                    darkscope_common::hll::hash_addr(Addr::from(
                        e.ip.parse::<IpAddr>().unwrap_or(IpAddr::from([0, 0, 0, 0]))
                    )) ^ (e.first_seen.secs() / 86_400) << 20
                        ^ (p.proto as u64) << 16
                        ^ p.port as u64,
                )
            );
            let mut row = vec![String::new(); COLUMNS.len()];
            row[0] = ts.clone();
            row[1] = p.proto.as_str().to_string();
            row[2] = e.ip.clone();
            row[4] = e.asn.map(|a| a.to_string()).unwrap_or_default();
            row[5] = e.geo.clone().unwrap_or_default();
            row[15] = p.port.to_string();
            row[17] = e.countries.first().cloned().unwrap_or_default();
            row[23] = "darkscope".into();
            row[24] = family.to_string();
            row[25] = family.to_string();
            row[26] = e.tag.clone();
            row[29] = event_id;
            row[30] = p.packets.to_string();
            out.push_str(
                &row.iter()
                    .map(|f| csv_field(f))
                    .collect::<Vec<_>>()
                    .join(","),
            );
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Addr {
        Addr::from(s.parse::<IpAddr>().unwrap())
    }

    fn sub(id: &str, resources: &str) -> SubscriberRecord {
        let mut s = SubscriberRecord {
            id: id.into(),
            ..Default::default()
        };
        s.set_resources(resources);
        s
    }

    #[test]
    fn longest_prefix_wins_across_subscribers_then_asns() {
        let table = AsnTable::parse(
            "203.0.113.0\t203.0.113.255\t64500\tJP\tEX\n198.18.0.0\t198.18.255.255\t64501\tJP\tEX2\n"
                .as_bytes(),
        )
        .unwrap();
        let subs = [
            sub("isp", "198.18.0.0/16,2001:db8::/32"),
            sub("customer", "198.18.1.8/29"),
            sub("asn-owner", "AS64500,AS64501"),
        ];
        let o = Owners::build(&subs, Some(Arc::new(table))).unwrap();
        assert_eq!(o.owner(a("198.18.1.2")), Some("isp"));
        assert_eq!(o.owner(a("198.18.1.9")), Some("customer"));
        assert_eq!(o.owner(a("203.0.113.1")), Some("asn-owner"), "by AS");
        assert_eq!(o.owner(a("192.0.2.1")), None);
        assert_eq!(o.owner(a("2001:db8:1::1")), Some("isp"));
        // Without a table, ASN subscriptions match nothing.
        let o = Owners::build(&subs, None).unwrap();
        assert_eq!(o.owner(a("203.0.113.1")), None);
        assert!(Owners::build(&[sub("x", "nope")], None).is_err());
        // The same prefix or AS twice is ambiguous; a revoked owner frees it.
        let e = Owners::build(
            &[sub("a", "198.18.0.0/16"), sub("b", "198.18.0.0/16")],
            None,
        );
        assert!(e
            .err()
            .unwrap()
            .to_string()
            .contains("owned by subscriber 'a'"));
        assert!(Owners::build(&[sub("a", "AS1"), sub("b", "AS1")], None).is_err());
        let mut gone = sub("a", "198.18.0.0/16");
        gone.revoked = Some(Timestamp(1));
        assert!(Owners::build(&[gone, sub("b", "198.18.0.0/16")], None).is_ok());
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for ip in ["198.18.1.2", "2001:db8::1", ""] {
            let c = FeedCursor {
                stored_at: 17,
                day: 1_763_683_200_000_000,
                ip: ip.into(),
            };
            assert_eq!(parse_cursor(&cursor_text(&c)), Some(c));
        }
        for bad in [
            "",
            "x",
            "1_2",
            "1_2_notanip",
            "-1_2_198.18.0.1",
            "1_2_' OR 1=1",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn csv_has_the_shadowserver_header_and_quotes_safely() {
        assert_eq!(COLUMNS.len(), 31);
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("plain"), "plain");
        let csv = to_csv(&[]);
        assert!(csv.starts_with("timestamp,protocol,src_ip,src_port,src_asn"));
    }
}
