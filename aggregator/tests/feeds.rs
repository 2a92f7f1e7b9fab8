//! Infection-alert feeds end to end: a real sensor replay of the shared
//! captures into a real aggregator, two subscribers with nested prefixes;
//! each feed (CSV and JSON) holds exactly its own hosts, with the packets,
//! fingerprints and tags the tshark truth implies; other credentials get 401.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use darkscope_common::{Addr, PrefixSet};
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::Command;

fn add_subscriber(agg: &Aggregator, id: &str, prefixes: &str) -> String {
    let out = Command::new(aggregator_bin())
        .arg("--database")
        .arg(&agg.db)
        .args(["subscriber", "add", "--id", id, "--prefix", prefixes])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn feed(agg: &Aggregator, token: &str, fmt: &str) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .get(format!(
            "{}/api/v1/feeds/events.{fmt}?date=2026-11-21",
            agg.url()
        ))
        .bearer_auth(token)
        .send()
        .unwrap();
    (r.status().as_u16(), r.text().unwrap())
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

#[test]
fn each_subscriber_gets_exactly_its_own_hosts() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let sensor_token = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-1")).unwrap();
    let isp = add_subscriber(&agg, "isp", "198.18.0.0/16,2001:db8::/32");
    let customer = add_subscriber(&agg, "customer", "198.18.1.8/29");
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());

    // Expected owners from the tshark truth: longest prefix wins.
    let inner = PrefixSet::parse_list("198.18.1.8/29").unwrap();
    let outer = PrefixSet::parse_list("198.18.0.0/16,2001:db8::/32").unwrap();
    let mut want: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for s in truth("all-small")["sources"].as_array().unwrap() {
        let ip = s["ip"].as_str().unwrap();
        let a = Addr::from(ip.parse::<std::net::IpAddr>().unwrap());
        let owner = if inner.contains(a) {
            "customer"
        } else if outer.contains(a) {
            "isp"
        } else {
            continue;
        };
        want.entry(owner)
            .or_default()
            .insert(ip.to_string(), s["packets"].as_u64().unwrap());
    }
    assert_eq!(want["customer"].len(), 3);

    for (id, token) in [("isp", &isp), ("customer", &customer)] {
        let (st, body) = feed(&agg, token, "json");
        assert_eq!(st, 200, "{body}");
        let got: BTreeMap<String, u64> = hosts(&body)
            .into_iter()
            .map(|(ip, e)| (ip, e["packets"].as_u64().unwrap()))
            .collect();
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
            ips.insert(f[2].to_string());
        }
        assert_eq!(ips, want[id].keys().cloned().collect(), "{id} csv");
    }
    // Evidence: fingerprints and tags.
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

    // Other credentials read nothing.
    assert_eq!(feed(&agg, "dst_wrong", "csv").0, 401);
    assert_eq!(feed(&agg, sensor_token.trim(), "json").0, 401);
    // Revoking the customer hands its hosts back to the covering prefix.
    assert!(Command::new(aggregator_bin())
        .arg("--database")
        .arg(&agg.db)
        .args(["subscriber", "revoke", "customer"])
        .status()
        .unwrap()
        .success());
    assert_eq!(feed(&agg, &customer, "json").0, 401);
    let i = hosts(&feed(&agg, &isp, "json").1);
    assert!(i.contains_key("198.18.1.10"));
    assert_eq!(i.len(), want["isp"].len() + 3);
}
