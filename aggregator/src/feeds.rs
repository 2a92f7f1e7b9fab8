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

use darkscope_common::wire::PortCount;
use darkscope_common::{Addr, ClassSet, FingerprintSet, PacketClass, Timestamp};
use ipnet::{Ipv4Net, Ipv6Net};
use prefix_trie::PrefixMap;
use serde::Serialize;
use std::net::IpAddr;

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

/// Which subscriber owns an address (longest prefix across all subscribers).
#[derive(Default)]
pub struct Owners {
    v4: PrefixMap<Ipv4Net, String>,
    v6: PrefixMap<Ipv6Net, String>,
}

/// A prefix that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("'{0}' is not a prefix such as 192.0.2.0/24 or 2001:db8::/32")]
pub struct BadPrefix(pub String);

impl Owners {
    /// From (subscriber id, its prefixes).
    pub fn build<'a>(
        subs: impl IntoIterator<Item = (&'a str, &'a [String])>,
    ) -> Result<Owners, BadPrefix> {
        let mut o = Owners::default();
        for (id, prefixes) in subs {
            for p in prefixes {
                match p
                    .parse::<ipnet::IpNet>()
                    .map_err(|_| BadPrefix(p.clone()))?
                    .trunc()
                {
                    ipnet::IpNet::V4(n) => {
                        o.v4.insert(n, id.to_string());
                    }
                    ipnet::IpNet::V6(n) => {
                        o.v6.insert(n, id.to_string());
                    }
                }
            }
        }
        Ok(o)
    }

    /// The owner of `a`, if any.
    pub fn owner(&self, a: Addr) -> Option<&str> {
        match a.to_ip() {
            IpAddr::V4(v4) => self
                .v4
                .get_lpm(&Ipv4Net::from(v4))
                .map(|(_, id)| id.as_str()),
            IpAddr::V6(v6) => self
                .v6
                .get_lpm(&Ipv6Net::from(v6))
                .map(|(_, id)| id.as_str()),
        }
    }
}

/// One host in a subscriber's feed for one day.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FeedEvent {
    /// The host.
    pub ip: String,
    /// First packet that day.
    pub first_seen: Timestamp,
    /// Last packet that day.
    pub last_seen: Timestamp,
    /// Packets to the darknet that day.
    pub packets: u64,
    /// Its ports, busiest first.
    pub ports: Vec<PortCount>,
    /// Sensors that saw it.
    pub sensors: Vec<String>,
    /// Countries of those sensors.
    pub countries: Vec<String>,
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
}

/// Packets per (protocol, port).
type PortTally = rustc_hash::FxHashMap<(darkscope_common::Proto, u16), u64>;

/// The feed of `subscriber` for the UTC day starting at `day`: every host
/// it owns (longest prefix across all active subscribers) that sent to the
/// darknet that day, busiest first.
pub fn build(
    store: &dyn crate::store::Store,
    subscriber: &str,
    day: Timestamp,
) -> Result<Vec<FeedEvent>, crate::store::StoreError> {
    use rustc_hash::FxHashMap;
    let subs: Vec<_> = store
        .subscribers()?
        .into_iter()
        .filter(|s| s.revoked.is_none())
        .collect();
    let owners = Owners::build(subs.iter().map(|s| (s.id.as_str(), &s.prefixes[..])))
        .map_err(|e| crate::store::StoreError::Backend(e.to_string()))?;
    let countries: FxHashMap<String, String> = store
        .sensors()?
        .into_iter()
        .map(|s| (s.id, s.country))
        .collect();
    let mut by: FxHashMap<Addr, (FeedEvent, PortTally)> = FxHashMap::default();
    for r in store.sources_between(day, Timestamp(day.0 + 86_400_000_000))? {
        if owners.owner(r.ip) != Some(subscriber) {
            continue;
        }
        let (e, ports) = by.entry(r.ip).or_insert_with(|| {
            (
                FeedEvent {
                    ip: r.ip.to_string(),
                    first_seen: r.first,
                    last_seen: r.last,
                    packets: 0,
                    ports: Vec::new(),
                    sensors: Vec::new(),
                    countries: Vec::new(),
                    fingerprints: FingerprintSet::default(),
                    classes: ClassSet::default(),
                    tag: String::new(),
                },
                FxHashMap::default(),
            )
        });
        e.first_seen = e.first_seen.min(r.first);
        e.last_seen = e.last_seen.max(r.last);
        e.packets += r.packets;
        e.fingerprints.0 |= r.fingerprints.0;
        e.classes.0 |= r.classes.0;
        if !e.sensors.contains(&r.sensor) {
            if let Some(cc) = countries.get(&r.sensor) {
                if !e.countries.contains(cc) {
                    e.countries.push(cc.clone());
                }
            }
            e.sensors.push(r.sensor.clone());
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
    out.sort_by(|a, b| b.packets.cmp(&a.packets).then(a.ip.cmp(&b.ip)));
    Ok(out)
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

    #[test]
    fn longest_prefix_wins_across_subscribers() {
        let isp = ["198.18.0.0/16".to_string(), "2001:db8::/32".to_string()];
        let customer = ["198.18.1.8/29".to_string()];
        let o = Owners::build([("isp", &isp[..]), ("customer", &customer[..])]).unwrap();
        assert_eq!(o.owner(a("198.18.1.2")), Some("isp"));
        assert_eq!(o.owner(a("198.18.1.9")), Some("customer"));
        assert_eq!(o.owner(a("203.0.113.1")), None);
        assert_eq!(o.owner(a("2001:db8:1::1")), Some("isp"));
        assert!(Owners::build([("x", &["nope".to_string()][..])]).is_err());
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
