//! Our feeds read by clients we did not write: the OASIS STIX validator
//! (`stix2-validator` 3.2.0), `taxii2-client` discovering and paging our
//! TAXII 2.1 server, and Python's csv module against the documented header
//! (`deploy/FEEDS.md`). The Python side is `tests/interop/check_feeds.py`,
//! run in the virtualenv `deploy/interop-venv.sh` makes.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use darkscope_aggregator::store::{sqlite::SqliteStore, Alert, Store};
use darkscope_common::{Proto, Timestamp};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The interop virtualenv's python (created on first use).
fn python() -> String {
    let out = Command::new("bash")
        .arg(root().join("deploy/interop-venv.sh"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "deploy/interop-venv.sh failed (needs python3 with venv and PyPI): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The CSV header as `deploy/FEEDS.md` documents it.
fn documented_header() -> Vec<String> {
    let doc = std::fs::read_to_string(root().join("deploy/FEEDS.md")).unwrap();
    let after = doc.split("<!-- csv-header -->").nth(1).unwrap();
    let line = after.lines().nth(2).unwrap();
    line.split(',').map(str::to_string).collect()
}

fn add_subscriber(agg: &Aggregator, id: &str, prefixes: &str) -> String {
    let out = Command::new(aggregator_bin())
        .arg("--config")
        .arg(agg.config.as_ref().unwrap())
        .arg("--database")
        .arg(&agg.db)
        .args(["subscriber", "add", "--id", id, "--prefix", prefixes])
        .output()
        .unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn check(py: &str, agg: &Aggregator, token: &str) -> Value {
    let out = Command::new(py)
        .arg(root().join("aggregator/tests/interop/check_feeds.py"))
        .args([
            "--url",
            &agg.url(),
            "--token",
            token,
            "--date",
            "2026-11-21",
        ])
        .args(["--per-request", "7"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check_feeds.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn set(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn real_stix_and_taxii_clients_read_our_feeds() {
    let py = python();
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        "[feeds]\noperator = \"CERT-Test\"\ntlp = \"amber\"\nshared_collection = true\n",
    )
    .unwrap();
    agg.config = Some(cfg);
    agg.add_sensor(dir.path(), "s-1");
    let isp = add_subscriber(&agg, "isp", "198.18.0.0/16,2001:db8::/32");
    let customer = add_subscriber(&agg, "customer", "198.18.1.8/29");
    // One surge alert for the shared collection.
    SqliteStore::open(&agg.db)
        .unwrap()
        .insert_alert(&Alert {
            id: 0,
            proto: Proto::Tcp,
            port: 23,
            scope: "global".into(),
            group: String::new(),
            start: Timestamp::parse_rfc3339("2026-11-21T09:00:00Z").unwrap(),
            severity: "high".into(),
            baseline: 3.5,
            observed: 120,
            state: "open".into(),
            resolved_at: None,
        })
        .unwrap();
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    let want = truth_owners(
        "all-small",
        &[
            ("customer", "198.18.1.8/29"),
            ("isp", "198.18.0.0/16,2001:db8::/32"),
        ],
    );

    for (id, token) in [("isp", &isp), ("customer", &customer)] {
        let r = check(&py, &agg, token);
        // The OASIS validator finds nothing wrong with anything we emit.
        assert_eq!(r["validation"]["errors"], serde_json::json!([]), "{id}");
        assert!(r["validation"]["objects"].as_u64().unwrap() > 20);
        // taxii2-client: discovery, API root, exactly our collections.
        assert_eq!(r["title"], "darkscope TAXII server");
        assert!(r["api_root"].as_str().unwrap().ends_with("/taxii2/feeds/"));
        assert_eq!(
            r["versions"],
            serde_json::json!(["application/taxii+json;version=2.1"])
        );
        let cols = r["collections"].as_object().unwrap();
        let own = &cols[&format!("Scanning hosts of {id}")];
        assert_eq!(cols.len(), 2, "own + shared");
        assert_eq!(
            (own["can_read"].as_bool(), own["can_write"].as_bool()),
            (Some(true), Some(false))
        );
        // Every host of the subscriber, nobody else's, over several pages.
        let hosts: BTreeSet<String> = want[id].keys().cloned().collect();
        assert_eq!(set(&own["ips"]), hosts, "{id}");
        assert!(own["pages"].as_u64().unwrap() > 1);
        assert_eq!(own["objects"], own["distinct_ids"], "each object once");
        assert_eq!(own["manifest"], own["objects"]);
        // added_after keeps exactly what was added later.
        assert_eq!(own["after_mid"], own["after_mid_expected"], "{id}");
        assert_eq!(
            own["types"]["observed-data"].as_u64().unwrap() as usize,
            hosts.len()
        );
        // The CSV parses with Python's csv module under the documented header.
        assert_eq!(
            r["csv"]["header"],
            serde_json::json!(documented_header()),
            "header as documented in deploy/FEEDS.md"
        );
        assert_eq!(r["csv"]["short_rows"], 0);
        assert_eq!(set(&r["csv"]["ips"]), hosts);
        let shared = &cols["Scanning surges"];
        assert_eq!(shared["types"]["indicator"], 1);
        assert_eq!(
            shared["indicator_patterns"],
            serde_json::json!([
                "[network-traffic:dst_port = 23 AND network-traffic:protocols[*] = 'tcp']"
            ])
        );
        assert_eq!(
            shared["ips"],
            serde_json::json!([]),
            "no hosts in the shared collection"
        );
    }
    // The Mirai-fingerprinted host: indicator and sighting, sighted by us.
    let c = check(&py, &agg, &customer);
    let own = &c["collections"]["Scanning hosts of customer"];
    assert_eq!(
        own["indicator_patterns"],
        serde_json::json!(["[ipv4-addr:value = '198.18.1.10']"])
    );
    let s = &own["sightings"][0];
    assert_eq!(
        s["count"].as_u64(),
        want["customer"].get("198.18.1.10").copied()
    );
    let identity = darkscope_aggregator::stix::sdo_id("identity", "CERT-Test");
    assert_eq!(s["where"], serde_json::json!([identity]));
    let i = check(&py, &agg, &isp);
    assert_eq!(
        i["collections"]["Scanning hosts of isp"]["types"].get("indicator"),
        None,
        "no malware fingerprint among the ISP's hosts"
    );
}

#[test]
fn taxii_answers_only_the_subscribers_own_collection() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.config = Some(dir.path().join("aggregator.toml"));
    std::fs::write(agg.config.as_ref().unwrap(), "").unwrap();
    let a = add_subscriber(&agg, "a", "198.18.0.0/16");
    let b = add_subscriber(&agg, "b", "198.19.0.0/16");
    agg.start();
    let client = reqwest::blocking::Client::new();
    let get = |path: &str, token: &str, accept: &str| {
        let r = client
            .get(format!("{}{path}", agg.url()))
            .bearer_auth(token)
            .header("Accept", accept)
            .send()
            .unwrap();
        let ct = r
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        (
            r.status().as_u16(),
            ct,
            r.json::<Value>().unwrap_or(Value::Null),
        )
    };
    let taxii = "application/taxii+json;version=2.1";
    let (st, ct, cols) = get("/taxii2/feeds/collections/", &a, taxii);
    assert_eq!(st, 200);
    assert_eq!(ct.as_deref(), Some(taxii));
    let cols = cols["collections"].as_array().unwrap().clone();
    assert_eq!(cols.len(), 1, "no shared collection unless configured");
    let a_id = cols[0]["id"].as_str().unwrap().to_string();
    // b cannot read a's collection, not even its existence.
    let (st, _, err) = get(
        &format!("/taxii2/feeds/collections/{a_id}/objects/"),
        &b,
        taxii,
    );
    assert_eq!(st, 404);
    assert_eq!(err["http_status"], "404");
    assert_eq!(
        get(&format!("/taxii2/feeds/collections/{a_id}/"), &b, taxii).0,
        404
    );
    // Bad or missing credentials, wrong media type, bad paging.
    assert_eq!(get("/taxii2/", "dst_wrong", taxii).0, 401);
    assert_eq!(get("/taxii2/", &a, "text/html").0, 406);
    let objects = format!("/taxii2/feeds/collections/{a_id}/objects/");
    assert_eq!(get(&format!("{objects}?limit=0"), &a, taxii).0, 400);
    assert_eq!(get(&format!("{objects}?next=garbage"), &a, taxii).0, 400);
    assert_eq!(
        get(&format!("{objects}?added_after=yesterday"), &a, taxii).0,
        400
    );
    // An empty collection still has the operator's identity and marking.
    let (st, _, env) = get(&objects, &a, taxii);
    assert_eq!(st, 200);
    let types: BTreeSet<String> = env["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["type"].as_str().unwrap().to_string())
        .collect();
    assert!(types.contains("identity") && types.contains("marking-definition"));
    assert_eq!(env["more"], false);
    // One object by id, and its versions.
    let id = env["objects"][0]["id"].as_str().unwrap().to_string();
    let (st, _, one) = get(&format!("{objects}{id}/"), &a, taxii);
    assert_eq!(st, 200);
    assert_eq!(one["objects"][0]["id"], id.as_str());
    let (st, _, v) = get(&format!("{objects}{id}/versions/"), &a, taxii);
    assert_eq!(st, 200);
    assert_eq!(v["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        get(
            &format!("{objects}indicator--00000000-0000-4000-8000-000000000000/"),
            &a,
            taxii
        )
        .0,
        404
    );
}

/// MaxMind-format enrichment: ASN and country databases written by a
/// third-party writer (PyPI's mmdb-writer) are read by the `enrich` table
/// (the country database's located country wins), and the detector finds
/// the one-network campaign through them as it does through the TSV.
#[test]
fn maxmind_databases_from_a_third_party_writer_drive_enrichment_and_detection() {
    use darkscope_aggregator::enrich::AsnTable;
    let dir = tempfile::tempdir().unwrap();
    let (asn, country) = (dir.path().join("asn.mmdb"), dir.path().join("country.mmdb"));
    let script = format!(
        r#"
from mmdb_writer import MMDBWriter, MmdbU32
from netaddr import IPSet
countries = {countries:?}
a = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-ASN", languages=["en"], description="darkscope test")
c = MMDBWriter(ip_version=6, ipv4_compatible=True, database_type="GeoLite2-Country", languages=["en"], description="darkscope test")
for i in range(30):
    net = IPSet([f"10.{{i}}.0.0/16"])
    a.insert_network(net, {{"autonomous_system_number": MmdbU32(64500 + i), "autonomous_system_organization": f"Net {{i}}"}})
    c.insert_network(net, {{"country": {{"iso_code": countries[i % 10]}}}})
a.insert_network(IPSet(["10.200.0.0/16"]), {{"autonomous_system_number": MmdbU32(64999), "autonomous_system_organization": "Campaign net"}})
c.insert_network(IPSet(["10.200.0.0/16"]), {{"country": {{"iso_code": "DE"}}}})
a.to_db_file("{asn}")
c.to_db_file("{country}")
"#,
        countries = CAMPAIGN_COUNTRIES,
        asn = asn.display(),
        country = country.display(),
    );
    run_ok(Command::new(python()).args(["-c", &script]));

    let t = AsnTable::load(&asn)
        .unwrap()
        .with_country_db(&country)
        .unwrap();
    let at = |s: &str| {
        t.lookup(darkscope_common::Addr::from(
            s.parse::<std::net::IpAddr>().unwrap(),
        ))
    };
    let x = at("10.200.7.9").unwrap();
    assert_eq!((x.asn, x.country, x.name), (64999, "DE", "Campaign net"));
    let y = at("10.3.0.1").unwrap();
    assert_eq!((y.asn, y.country), (64503, "BR"));
    assert_eq!(at("192.0.2.1"), None);
    assert_eq!(at("2001:db8::1"), None);
    // Only the country database: country known, AS 0.
    let only = AsnTable::default().with_country_db(&country).unwrap();
    let z = only
        .lookup(darkscope_common::Addr::from(
            "10.200.0.1".parse::<std::net::IpAddr>().unwrap(),
        ))
        .unwrap();
    assert_eq!((z.asn, z.country), (0, "DE"));
    // A file that is not a MaxMind database is refused with its name.
    let bad = dir.path().join("bad.mmdb");
    std::fs::write(&bad, b"not a database").unwrap();
    let e = AsnTable::load(&bad).err().unwrap().to_string();
    assert!(e.contains("bad.mmdb"), "{e}");

    let store = SqliteStore::open(&dir.path().join("d.db")).unwrap();
    one_network_campaign(&store);
    assert_campaign_alerts(&detect_all(&store, Some(std::sync::Arc::new(t))));
}
