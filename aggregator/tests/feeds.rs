//! Infection-alert feeds end to end: a real sensor replay of the shared
//! captures into a real aggregator, two subscribers with nested prefixes;
//! each feed (CSV and JSON) holds exactly its own hosts, with the packets,
//! fingerprints and tags the tshark truth implies; other credentials get 401.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use darkscope_common::Timestamp;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

fn add_subscriber(agg: &Aggregator, id: &str, args: &[&str]) -> String {
    agg.admin(&[&["subscriber", "add", "--id", id], args].concat())
}

fn cli(agg: &Aggregator, args: &[&str]) -> std::process::Output {
    Command::new(aggregator_bin())
        .arg("--database")
        .arg(&agg.db)
        .args(args)
        .output()
        .unwrap()
}

fn get(agg: &Aggregator, token: &str, path: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!("{}{path}", agg.url()))
        .bearer_auth(token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
}

fn feed(agg: &Aggregator, token: &str, fmt: &str) -> (u16, String) {
    get(
        agg,
        token,
        &format!("/api/v1/feeds/events.{fmt}?date=2026-11-21"),
    )
}

fn hosts(json: &str) -> BTreeMap<String, Value> {
    let v: Value = serde_json::from_str(json).unwrap();
    v["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["ip"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

/// Packets per (protocol, port) of a list of port rows.
fn packets_by_port(rows: &Value) -> BTreeMap<(String, u64), u64> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let key = (
                p["proto"].as_str().unwrap().to_string(),
                p["port"].as_u64().unwrap(),
            );
            (key, p["packets"].as_u64().unwrap())
        })
        .collect()
}

/// Packets per host of a list of feed events.
fn packets_by_ip(events: &[Value]) -> BTreeMap<String, u64> {
    events
        .iter()
        .map(|e| {
            (
                e["ip"].as_str().unwrap().to_string(),
                e["packets"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Addresses below 100.0.0.0 belong to AS64999 (owned by subscriber
/// "by-asn"); the scanners' block is AS64500 in JP.
const ASN_TABLE: &str = "0.0.0.0\t99.255.255.255\t64999\tDE\tEXAMPLE-LOW\n\
198.18.0.0\t198.18.255.255\t64500\tJP\tEXAMPLE-SCANNERS\n";

/// Everything a subscriber should see, from the tshark truth: longest
/// prefix first, then the AS.
fn expected() -> BTreeMap<&'static str, BTreeMap<String, u64>> {
    truth_owners(
        "all-small",
        &[
            ("customer", "198.18.1.8/29"),
            ("isp", "198.18.0.0/16,2001:db8::/32"),
            ("by-asn", "0.0.0.0/2,64.0.0.0/3,96.0.0.0/6"),
        ],
    )
}

#[test]
fn each_subscriber_gets_exactly_its_own_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let table = dir.path().join("ip2asn.tsv");
    std::fs::write(&table, ASN_TABLE).unwrap();
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        format!("[feeds]\nasn_table = \"{}\"\n", table.display()),
    )
    .unwrap();
    agg.config = Some(cfg);
    let sensor_token = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-1")).unwrap();
    let isp = add_subscriber(&agg, "isp", &["--prefix", "198.18.0.0/16,2001:db8::/32"]);
    let customer = add_subscriber(&agg, "customer", &["--prefix", "198.18.1.8/29"]);
    let by_asn = add_subscriber(&agg, "by-asn", &["--asn", "64999"]);
    // Ownership must be unambiguous.
    let dup = cli(
        &agg,
        &[
            "subscriber",
            "add",
            "--id",
            "dup",
            "--prefix",
            "198.18.1.8/29",
        ],
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("already owned by subscriber 'customer'"));
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());

    let want = expected();
    assert_eq!(want["customer"].len(), 3);
    assert!(want["by-asn"].len() > 100, "spoofed sources below 100/8");

    for (id, token) in [("isp", &isp), ("customer", &customer), ("by-asn", &by_asn)] {
        let (st, body) = feed(&agg, token, "json");
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let got = packets_by_ip(v["events"].as_array().unwrap());
        assert_eq!(got, want[id], "{id}");
        // The CSV carries the same hosts under the Shadowserver header.
        let (st, csv) = feed(&agg, token, "csv");
        assert_eq!(st, 200);
        let mut lines = csv.lines();
        assert_eq!(
            lines.next().unwrap(),
            darkscope_aggregator::feeds::COLUMNS.join(",")
        );
        let mut ips = std::collections::BTreeSet::new();
        for l in lines {
            let f: Vec<&str> = l.split(',').collect();
            assert_eq!(f.len(), 31, "{l}");
            assert_eq!(f[23], "darkscope");
            // src_asn and src_geo come from the ASN table.
            let (asn, geo) = if id == "by-asn" {
                ("64999", "DE")
            } else if f[2].contains(':') {
                ("", "")
            } else {
                ("64500", "JP")
            };
            assert_eq!((f[4], f[5]), (asn, geo), "{l}");
            ips.insert(f[2].to_string());
        }
        assert_eq!(ips, want[id].keys().cloned().collect(), "{id} csv");
    }
    // Analysts see which feeds carried a source: the owner's and no other.
    for (ip, feeds) in [
        ("198.18.1.10", vec!["customer"]),
        ("198.18.1.2", vec!["isp"]),
    ] {
        let v = agg.get(&format!("/api/v1/sources/{ip}"));
        let got: Vec<&str> = v["feeds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["subscriber"].as_str().unwrap())
            .collect();
        assert_eq!(got, feeds, "{ip}");
        assert_eq!(v["feeds"][0]["packets"], want[feeds[0]][ip]);
    }
    // An AS's alert shows that AS's sources only: of the spoofed sources on
    // tcp/80 in their window, those below 100/8 (AS 64999), not the others
    // there.
    let alert = |group: &str| {
        use darkscope_aggregator::store::{sqlite::SqliteStore, Alert, Store};
        SqliteStore::open(&agg.db)
            .unwrap()
            .insert_alert(&Alert {
                id: 0,
                proto: darkscope_common::Proto::Tcp,
                port: 80,
                scope: "local".into(),
                group: group.into(),
                start: Timestamp::parse_rfc3339("2026-11-21T23:22:00Z").unwrap(),
                severity: "high".into(),
                baseline: 1.0,
                observed: 2000,
                state: "open".into(),
                resolved_at: None,
            })
            .unwrap()
    };
    let by_as = agg.get(&format!("/api/v1/alerts/{}", alert("asn:64999")));
    let e = &by_as["evidence"];
    let spoofed = truth("spoofed")["sources"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| {
            let ip: std::net::Ipv4Addr = x["ip"].as_str().unwrap().parse().unwrap();
            ip.octets()[0] < 100
        })
        .count() as u64;
    assert!(spoofed > 100);
    assert_eq!(e["sources"].as_u64().unwrap(), spoofed, "{e}");
    assert_eq!(e["top_sources"].as_array().unwrap().len(), 10);
    for x in e["top_sources"].as_array().unwrap() {
        let ip: std::net::Ipv4Addr = x["ip"].as_str().unwrap().parse().unwrap();
        assert!(ip.octets()[0] < 100, "{ip} is not in AS 64999");
    }
    let whole = agg.get(&format!("/api/v1/alerts/{}", alert("")));
    assert!(whole["evidence"]["sources"].as_u64().unwrap() > spoofed);
    // Evidence: fingerprints, tags, AS, sensor countries.
    let c = hosts(&feed(&agg, &customer, "json").1);
    assert_eq!(
        c["198.18.1.10"]["fingerprints"],
        serde_json::json!(["mirai"])
    );
    let i = hosts(&feed(&agg, &isp, "json").1);
    assert_eq!(
        i["198.18.1.2"]["fingerprints"],
        serde_json::json!(["masscan"])
    );
    assert_eq!(i["198.18.1.6"]["tag"], "backscatter");
    assert_eq!(i["198.18.1.4"]["tag"], "darknet-scan");
    assert_eq!(i["198.18.1.4"]["countries"], serde_json::json!(["JP"]));
    assert_eq!(i["198.18.1.4"]["asn"], 64500);
    assert!(i["198.18.1.4"]["destinations"].as_u64().unwrap() > 1);
    // Each scanner's ports as tshark counts them in its own capture.
    let all = [i.clone(), c.clone()];
    for cap in [
        "masscan", "zmap", "nmap", "udp", "mirai", "icmp", "synack", "rst",
    ] {
        let t = truth(cap);
        let ip = t["sources"][0]["ip"].as_str().unwrap();
        let want = packets_by_port(&t["ports"]);
        let e = all.iter().find_map(|m| m.get(ip)).unwrap();
        // Fingerprints exactly as the truth attributes them, and Nmap's for
        // the nmap -sS scanner (the truth files predate that rule; the
        // sensor's labelling is checked against tshark's fields in
        // sensor/tests/tshark_oracle.rs).
        let mut fps: Vec<&str> = t["fingerprints"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, who)| who.as_array().unwrap().iter().any(|w| w == ip))
            .map(|(f, _)| f.as_str())
            .collect();
        if cap == "nmap" {
            fps.push("nmap");
        }
        assert_eq!(
            e["fingerprints"],
            serde_json::json!(fps),
            "{cap}: fingerprints of {ip}"
        );
        let got = packets_by_port(&e["ports"]);
        if want.len() <= darkscope_common::wire::TopPorts::CAP {
            assert_eq!(got, want, "{cap}: ports of {ip}");
        } else {
            // Summaries carry each source's busiest ports per window: a wide
            // scanner shows a subset, with lower-bound counts.
            assert!(got.len() >= darkscope_common::wire::TopPorts::CAP, "{cap}");
            for (k, n) in &got {
                assert!(want.get(k).is_some_and(|w| n <= w), "{cap}: {k:?} {n}");
            }
        }
    }
    // Backscatter victims apart from scanners.
    let (_, b) = get(
        &agg,
        &isp,
        "/api/v1/feeds/events.json?date=2026-11-21&tag=backscatter",
    );
    let b = hosts(&b);
    assert!(b.contains_key("198.18.1.6") && b.contains_key("198.18.1.7"));
    assert!(b.values().all(|e| e["tag"] == "backscatter"));
    assert_eq!(get(&agg, &isp, "/api/v1/feeds/events.csv?tag=worms").0, 400);
    assert_eq!(
        get(&agg, &isp, "/api/v1/feeds/events.csv?date=2026-13-01").0,
        400
    );

    // Other credentials read nothing.
    assert_eq!(feed(&agg, "dst_wrong", "csv").0, 401);
    assert_eq!(feed(&agg, sensor_token.trim(), "json").0, 401);
    assert_eq!(
        reqwest::blocking::get(format!("{}/api/v1/feeds/events.json", agg.url()))
            .unwrap()
            .status(),
        401
    );
}

/// Pages through `events.json?since=...` with `limit`, following `next`.
fn page_all(agg: &Aggregator, token: &str, first: &str, limit: usize) -> (Vec<Value>, String) {
    let mut all = Vec::new();
    let mut q = format!("since={first}");
    loop {
        let (st, body) = get(
            agg,
            token,
            &format!("/api/v1/feeds/events.json?{q}&limit={limit}"),
        );
        assert_eq!(st, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        let page = v["events"].as_array().unwrap();
        assert!(page.len() <= limit);
        all.extend(page.iter().cloned());
        let next = v["next"].as_str().unwrap().to_string();
        if !v["more"].as_bool().unwrap() {
            return (all, next);
        }
        q = format!("cursor={next}");
    }
}

#[test]
fn the_change_feed_pages_and_follows_ownership_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-1");
    agg.add_sensor(dir.path(), "s-2");
    let isp = add_subscriber(&agg, "isp", &["--prefix", "198.18.0.0/16,2001:db8::/32"]);
    let customer = add_subscriber(&agg, "customer", &["--prefix", "198.18.1.8/29"]);
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    let want = expected();

    // Paging with a small limit yields each host-day once, ordered by update.
    let (events, next) = page_all(&agg, &isp, "2026-01-01T00:00:00Z", 2);
    let ips = packets_by_ip(&events);
    assert_eq!(ips.len(), events.len(), "no host twice");
    assert_eq!(ips, want["isp"]);
    let updated: Vec<Timestamp> = events
        .iter()
        .map(|e| Timestamp::parse_rfc3339(e["updated"].as_str().unwrap()).unwrap())
        .collect();
    assert!(updated.windows(2).all(|w| w[0] <= w[1]));
    // Nothing new since the last page.
    let (st, body) = get(
        &agg,
        &isp,
        &format!("/api/v1/feeds/events.json?cursor={next}"),
    );
    assert_eq!(st, 200);
    assert_eq!(hosts(&body).len(), 0);
    assert_eq!(
        get(&agg, &isp, "/api/v1/feeds/events.json?cursor=garbage").0,
        400
    );
    assert_eq!(
        get(
            &agg,
            &isp,
            "/api/v1/feeds/events.json?since=2026-01-01T00:00:00Z&limit=0"
        )
        .0,
        400
    );

    // The customer leaves; its hosts are the ISP's again for new data.
    assert!(cli(&agg, &["subscriber", "revoke", "customer"])
        .status
        .success());
    assert_eq!(feed(&agg, &customer, "json").0, 401);
    // Subscriptions are re-read within seconds.
    std::thread::sleep(std::time::Duration::from_secs(6));
    assert!(sensor_cmd(&agg, dir.path(), "s-2", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    let (st, body) = get(
        &agg,
        &isp,
        &format!("/api/v1/feeds/events.json?cursor={next}&limit=5000"),
    );
    assert_eq!(st, 200);
    let again = hosts(&body);
    let mut expect: BTreeMap<String, u64> = want["isp"]
        .iter()
        .map(|(k, v)| (k.clone(), 2 * v))
        .collect();
    expect.extend(want["customer"].iter().map(|(k, v)| (k.clone(), *v)));
    let got = packets_by_ip(&again.values().cloned().collect::<Vec<_>>());
    assert_eq!(
        got, expect,
        "ISP hosts updated by s-2, the customer's hosts newly the ISP's"
    );
    assert_eq!(
        again["198.18.1.4"]["sensors"],
        serde_json::json!(["s-1", "s-2"])
    );

    // Updating prefixes: the ISP keeps only IPv6; new data follows.
    let up = cli(
        &agg,
        &["subscriber", "update", "isp", "--prefix", "2001:db8::/32"],
    );
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let list = String::from_utf8(cli(&agg, &["subscriber", "list"]).stdout).unwrap();
    assert!(
        list.lines()
            .any(|l| l.starts_with("isp ") && l.ends_with("2001:db8::/32")),
        "{list}"
    );
    let bad = cli(
        &agg,
        &["subscriber", "update", "isp", "--webhook", "ftp://x"],
    );
    assert!(!bad.status.success());
    assert!(!cli(
        &agg,
        &["subscriber", "update", "nobody", "--prefix", "10.0.0.0/8"]
    )
    .status
    .success());
}

#[test]
fn new_events_are_pushed_signed_to_the_subscribers_webhook_after_a_retry() {
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let cfg = dir.path().join("aggregator.toml");
    std::fs::write(
        &cfg,
        "detect_interval_secs = 1\n[feeds]\npush_interval_secs = 1\n",
    )
    .unwrap();
    agg.config = Some(cfg);
    agg.add_sensor(dir.path(), "s-1");
    let (url, seen) = receiver();
    let token = add_subscriber(
        &agg,
        "customer",
        &["--prefix", "198.18.1.8/29", "--webhook", &url],
    );
    add_subscriber(&agg, "isp", &["--prefix", "198.18.0.0/16"]);
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    let wait = std::time::Duration::from_secs(30);
    // The receiver refuses the first delivery; the retry is taken.
    let (_, first) = seen.recv_timeout(wait).expect("a digest");
    let (head, body) = seen.recv_timeout(wait).expect("the retried digest");
    assert_eq!(first, body, "the same digest again");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
            .unwrap()
    };
    // Verifiable with nothing but the subscriber's token.
    let key = Sha256::digest(format!("darkscope feed webhook\0{token}").as_bytes());
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&key).unwrap();
    mac.update(header("x-darkscope-timestamp").as_bytes());
    mac.update(b".");
    mac.update(&body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(header("x-darkscope-signature"), format!("sha256={hex}"));
    let digest: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(digest["type"], "feed-digest");
    assert_eq!(digest["subscriber"], "customer");
    let got = packets_by_ip(digest["events"].as_array().unwrap());
    assert_eq!(got, expected()["customer"], "exactly its own new hosts");
    // Accepted digests are not sent again; only the webhook's owner gets one.
    assert!(seen
        .recv_timeout(std::time::Duration::from_secs(3))
        .is_err());
    let metrics = reqwest::blocking::get(format!("{}/metrics", agg.url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("darkscope_aggregator_feed_pushes_total 1"),
        "{metrics}"
    );
}
