//! Feed events as STIX 2.1 objects, for TAXII collections and bundles.
//!
//! Per host-day event (see [`crate::feeds::FeedEvent`]):
//! - an `ipv4-addr`/`ipv6-addr` and one `network-traffic` per port (source
//!   address, destination port, protocols; never a darknet address), with
//!   the spec's deterministic UUIDv5 ids;
//! - an `observed-data` over them (first/last packet, packets as
//!   `number_observed`, the tag and tool fingerprints as labels);
//! - when the host carried a malware fingerprint (Mirai) and was not only
//!   backscatter: an `indicator` on its address, `indicates` the `malware`,
//!   and a `sighting` of it, sighted by the operator's `identity` (never a
//!   sensor) with the observed-data as evidence.
//!
//! Shared per collection: the operator's `identity`, the TLP
//! `marking-definition` every object carries, and the `malware` objects.
//! SDO and SRO ids are UUIDv4-shaped but seeded by a hash of what they
//! describe, so the same event always has the same ids and a later update
//! is a new version (same id, newer `modified`) of the same object.

use crate::feeds::FeedEvent;
use crate::store::Alert;
use darkscope_common::{Fingerprint, Proto, Timestamp};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// The STIX 2.1 namespace for deterministic cyber-observable ids.
const SCO_NAMESPACE: uuid::Uuid = uuid::uuid!("00abedb4-aa42-466c-9c01-fed23315a9b7");

/// STIX's media type, as TAXII lists it.
pub const MEDIA_TYPE: &str = "application/stix+json;version=2.1";

/// When the shared objects (identity, malware) were defined.
const DEFINED: &str = "2026-01-01T00:00:00.000Z";

/// A hash-seeded id for an SDO or SRO of `kind`, from `key`.
pub fn sdo_id(kind: &str, key: &str) -> String {
    let h = Sha256::digest(format!("darkscope:{kind}:{key}").as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    format!(
        "{kind}--{}",
        uuid::Builder::from_random_bytes(b).into_uuid()
    )
}

/// The spec's deterministic id of a cyber-observable: UUIDv5 over the
/// canonical JSON of its id-contributing properties.
pub fn sco_id(kind: &str, contributing: &Value) -> String {
    // serde_json's map is ordered by key and prints compactly: the
    // canonical form (RFC 8785) for these string/integer-only objects.
    let name = contributing.to_string();
    format!(
        "{kind}--{}",
        uuid::Uuid::new_v5(&SCO_NAMESPACE, name.as_bytes())
    )
}

/// A STIX timestamp (UTC, millisecond precision).
pub fn time(t: Timestamp) -> String {
    let s = Timestamp(t.0 - t.0 % 1_000_000).to_string();
    format!("{}.{:03}Z", &s[..19], t.0 % 1_000_000 / 1000)
}

/// The TLP 1.0 marking definitions as the STIX 2.1 spec fixes them
/// (name, id).
const TLP: [(&str, &str); 4] = [
    (
        "white",
        "marking-definition--613f2e26-407d-48c7-9eca-b8e91df99dc9",
    ),
    (
        "green",
        "marking-definition--34098fce-860f-48ae-8e50-ebd3cc5e41da",
    ),
    (
        "amber",
        "marking-definition--f88d31f6-486f-44da-b317-01333bde0b82",
    ),
    (
        "red",
        "marking-definition--5e57c739-391a-4eb3-b6be-7d15ca92d5ed",
    ),
];

/// Malware families our fingerprints name.
const MALWARE: [(Fingerprint, &str, &str); 1] = [(
    Fingerprint::Mirai,
    "Mirai",
    "IoT botnet malware that scans for telnet services with TCP sequence numbers equal to the target address; its many descendants keep that trait.",
)];

/// What every object of a collection shares: the operator and the marking.
#[derive(Clone, Debug)]
pub struct Context {
    /// The operator's identity id.
    pub identity: String,
    /// The operator's name.
    pub operator: String,
    /// The TLP level (`white`, `green`, `amber`, `red`).
    pub tlp: String,
}

impl Context {
    /// For an operator and TLP level.
    pub fn new(operator: &str, tlp: &str) -> Context {
        Context {
            identity: sdo_id("identity", operator),
            operator: operator.to_string(),
            tlp: tlp.to_string(),
        }
    }

    fn marking(&self) -> &'static str {
        TLP.iter()
            .find(|(n, _)| *n == self.tlp)
            .map(|(_, id)| *id)
            .unwrap_or(TLP[2].1)
    }

    /// The shared objects: identity, TLP marking definition, malware.
    pub fn shared_objects(&self) -> Vec<Value> {
        let tlp = self.marking();
        let mut v = vec![
            json!({
                "type": "identity", "spec_version": "2.1", "id": self.identity,
                "created": DEFINED, "modified": DEFINED,
                "name": self.operator, "identity_class": "organization",
                "description": "Operator of a darknet (network telescope) observation system.",
                "object_marking_refs": [tlp],
            }),
            json!({
                "type": "marking-definition", "spec_version": "2.1", "id": tlp,
                "created": "2017-01-20T00:00:00.000Z", "definition_type": "tlp",
                "name": format!("TLP:{}", self.tlp.to_uppercase()),
                "definition": { "tlp": self.tlp },
            }),
        ];
        for (_, name, description) in MALWARE {
            v.push(json!({
                "type": "malware", "spec_version": "2.1", "id": sdo_id("malware", name),
                "created": DEFINED, "modified": DEFINED, "created_by_ref": self.identity,
                "name": name, "description": description, "is_family": true,
                "malware_types": ["bot", "worm"],
                "object_marking_refs": [tlp],
            }));
        }
        v
    }

    /// The objects describing one host-day event of `subscriber`.
    pub fn event_objects(&self, subscriber: &str, e: &FeedEvent) -> Vec<Value> {
        let tlp = self.marking();
        let (created, modified) = (time(e.first_stored), time(e.updated.max(e.first_stored)));
        let v6 = e.ip.contains(':');
        let addr_type = if v6 { "ipv6-addr" } else { "ipv4-addr" };
        let addr_id = sco_id(addr_type, &json!({ "value": e.ip }));
        let mut out = vec![json!({
            "type": addr_type, "spec_version": "2.1", "id": addr_id, "value": e.ip,
        })];
        let mut refs = vec![addr_id.clone()];
        for p in &e.ports {
            let l3 = if v6 { "ipv6" } else { "ipv4" };
            let (protocols, port) = match p.proto {
                Proto::Tcp => (json!([l3, "tcp"]), Some(p.port)),
                Proto::Udp => (json!([l3, "udp"]), Some(p.port)),
                Proto::Icmp => (json!([l3, "icmp"]), None),
                Proto::Icmpv6 => (json!([l3, "ipv6-icmp"]), None),
                Proto::Ip => (json!([l3]), None),
            };
            let mut id_props = json!({ "protocols": protocols, "src_ref": addr_id });
            if let Some(port) = port {
                id_props["dst_port"] = json!(port);
            }
            let id = sco_id("network-traffic", &id_props);
            if refs.contains(&id) {
                continue; // e.g. two ICMP types: one flow object
            }
            let mut o = id_props;
            o["type"] = json!("network-traffic");
            o["spec_version"] = json!("2.1");
            o["id"] = json!(id);
            out.push(o);
            refs.push(id);
        }
        let key = format!("{subscriber}|{}|{}", e.date, e.ip);
        let observed = sdo_id("observed-data", &key);
        let mut labels = vec![e.tag.clone()];
        labels.extend(
            e.fingerprints
                .iter()
                .filter(|f| !MALWARE.iter().any(|m| m.0 == *f))
                .map(|f| format!("{}-fingerprint", f.as_str())),
        );
        let count = e.packets.clamp(1, 999_999_999);
        let last = e.last_seen.max(e.first_seen);
        out.push(json!({
            "type": "observed-data", "spec_version": "2.1", "id": observed,
            "created": created, "modified": modified, "created_by_ref": self.identity,
            "first_observed": time(e.first_seen), "last_observed": time(last),
            "number_observed": count, "object_refs": refs, "labels": labels,
            "object_marking_refs": [tlp],
        }));
        if e.is_backscatter() {
            return out;
        }
        for (fp, name, _) in MALWARE {
            if e.fingerprints.0 & fp.bit() == 0 {
                continue;
            }
            let indicator = sdo_id("indicator", &format!("{key}|{name}"));
            let pattern = format!("[{addr_type}:value = '{}']", e.ip);
            out.push(json!({
                "type": "indicator", "spec_version": "2.1", "id": indicator,
                "created": created, "modified": modified, "created_by_ref": self.identity,
                "name": format!("{name}-fingerprinted scanning from {}", e.ip),
                "description": format!(
                    "{} sent {} packets to unused address space on {} with the {name} scanner's fingerprint: the host is very likely infected.",
                    e.ip, e.packets, e.date
                ),
                "indicator_types": ["malicious-activity", "compromised"],
                "pattern": pattern, "pattern_type": "stix",
                "valid_from": time(e.first_seen),
                "object_marking_refs": [tlp],
            }));
            out.push(json!({
                "type": "relationship", "spec_version": "2.1",
                "id": sdo_id("relationship", &format!("{key}|{name}|indicates")),
                "created": created, "modified": modified, "created_by_ref": self.identity,
                "relationship_type": "indicates",
                "source_ref": indicator, "target_ref": sdo_id("malware", name),
                "object_marking_refs": [tlp],
            }));
            out.push(json!({
                "type": "sighting", "spec_version": "2.1",
                "id": sdo_id("sighting", &format!("{key}|{name}")),
                "created": created, "modified": modified, "created_by_ref": self.identity,
                "first_seen": time(e.first_seen), "last_seen": time(last),
                "count": count, "sighting_of_ref": indicator,
                "observed_data_refs": [observed],
                "where_sighted_refs": [self.identity],
                "object_marking_refs": [tlp],
            }));
        }
        out
    }

    /// A surge alert as an aggregate indicator (no host addresses).
    pub fn alert_indicator(&self, a: &Alert) -> Value {
        let id = sdo_id("indicator", &format!("alert|{}", a.id));
        let start = time(a.start);
        let modified = a.resolved_at.map(time).unwrap_or_else(|| start.clone());
        let proto = a.proto.as_str();
        // Only sources from one country or AS, when the alert says so.
        let group = match a.group.split_once(':') {
            Some(("country", cc)) => format!(" from {cc}"),
            Some(("asn", n)) => format!(" from AS{n}"),
            _ => String::new(),
        };
        let pattern = match a.proto {
            Proto::Tcp | Proto::Udp => format!(
                "[network-traffic:dst_port = {} AND network-traffic:protocols[*] = '{proto}']",
                a.port
            ),
            _ => format!("[network-traffic:protocols[*] = '{proto}']"),
        };
        let mut o = json!({
            "type": "indicator", "spec_version": "2.1", "id": id,
            "created": start, "modified": modified, "created_by_ref": self.identity,
            "name": format!("Scanning surge on {}/{proto}{}", a.port, group),
            "description": format!(
                "Distinct sources{} scanning {}/{proto} rose to {} against a baseline of {:.1} (severity {}, scope {}).",
                group, a.port, a.observed, a.baseline, a.severity, a.scope
            ),
            "indicator_types": ["anomalous-activity"],
            "pattern": pattern, "pattern_type": "stix",
            "valid_from": start,
            "object_marking_refs": [self.marking()],
        });
        if let Some(r) = a.resolved_at.filter(|r| *r > a.start) {
            o["valid_until"] = json!(time(r));
        }
        o
    }
}

/// A bundle of objects (a fresh random id each time, as bundles are
/// transient wrappers).
pub fn bundle(objects: Vec<Value>) -> Value {
    let mut b = [0u8; 16];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
    json!({
        "type": "bundle",
        "id": format!("bundle--{}", uuid::Builder::from_random_bytes(b).into_uuid()),
        "objects": objects,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use darkscope_common::wire::PortCount;
    use darkscope_common::{ClassSet, FingerprintSet, PacketClass};

    fn event(ip: &str, fp: FingerprintSet, tag: &str) -> FeedEvent {
        FeedEvent {
            ip: ip.into(),
            date: "2026-11-21".into(),
            first_seen: Timestamp(1_763_715_600_123_456),
            last_seen: Timestamp(1_763_715_660_000_000),
            updated: Timestamp(1_763_715_700_000_000),
            first_stored: Timestamp(1_763_715_690_000_000),
            packets: 42,
            destinations: 7,
            ports: vec![
                PortCount {
                    proto: Proto::Tcp,
                    port: 23,
                    packets: 40,
                },
                PortCount {
                    proto: Proto::Icmp,
                    port: 8,
                    packets: 2,
                },
            ],
            sensors: vec!["s-1".into()],
            countries: vec!["JP".into()],
            asn: None,
            geo: None,
            fingerprints: fp,
            classes: ClassSet(1 << PacketClass::TcpSyn as u8),
            tag: tag.into(),
        }
    }

    #[test]
    fn ids_are_deterministic_and_well_formed() {
        let a = sdo_id("indicator", "k");
        assert_eq!(a, sdo_id("indicator", "k"));
        assert_ne!(a, sdo_id("indicator", "k2"));
        let u = uuid::Uuid::parse_str(a.strip_prefix("indicator--").unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 4);
        // The spec's own example: ipv4-addr 198.51.100.3.
        let s = sco_id("ipv4-addr", &json!({"value": "198.51.100.3"}));
        let u = uuid::Uuid::parse_str(s.strip_prefix("ipv4-addr--").unwrap()).unwrap();
        assert_eq!(u.get_version_num(), 5);
        assert_eq!(
            time(Timestamp(1_763_715_600_123_456)),
            "2025-11-21T09:00:00.123Z"
        );
    }

    #[test]
    fn a_mirai_host_gets_indicator_sighting_and_evidence() {
        let c = Context::new("CERT-X", "amber");
        let mirai = FingerprintSet(Fingerprint::Mirai.bit());
        let objs = c.event_objects("isp", &event("198.18.1.10", mirai, "darknet-scan"));
        let types: Vec<&str> = objs.iter().map(|o| o["type"].as_str().unwrap()).collect();
        assert_eq!(
            types,
            [
                "ipv4-addr",
                "network-traffic",
                "network-traffic",
                "observed-data",
                "indicator",
                "relationship",
                "sighting"
            ]
        );
        let sighting = &objs[6];
        assert_eq!(sighting["where_sighted_refs"], json!([c.identity]));
        assert_eq!(sighting["sighting_of_ref"], objs[4]["id"]);
        assert_eq!(objs[4]["pattern"], "[ipv4-addr:value = '198.18.1.10']");
        assert!(
            objs.iter().all(|o| o.to_string().find("s-1").is_none()),
            "no sensor ids"
        );
        // The same event gives the same objects.
        assert_eq!(
            objs,
            c.event_objects("isp", &event("198.18.1.10", mirai, "darknet-scan"))
        );
        // Another subscriber's view of the host is a different object.
        assert_ne!(
            objs[3]["id"],
            c.event_objects("other", &event("198.18.1.10", mirai, "darknet-scan"))[3]["id"]
        );
        // Backscatter and tool fingerprints: evidence only.
        let masscan = FingerprintSet(Fingerprint::Masscan.bit());
        let objs = c.event_objects("isp", &event("2001:db8::1", masscan, "darknet-scan"));
        assert_eq!(objs.last().unwrap()["type"], "observed-data");
        assert_eq!(
            objs.last().unwrap()["labels"],
            json!(["darknet-scan", "masscan-fingerprint"])
        );
        assert_eq!(objs[0]["type"], "ipv6-addr");
        let objs = c.event_objects("isp", &event("198.18.1.6", mirai, "backscatter"));
        assert_eq!(objs.last().unwrap()["type"], "observed-data");
    }
}
