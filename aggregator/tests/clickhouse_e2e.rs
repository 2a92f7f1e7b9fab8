//! The aggregator binary on a real ClickHouse server: `migrate`, `serve`,
//! a real sensor replay whose per-port answers equal the tshark truth, and
//! a second replica on the same database that answers the same and stores
//! a retried upload once.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

/// Runs the CLI with `config`; returns (stdout, stdout + stderr).
fn cli2(config: &Path, args: &[&str]) -> (String, String) {
    let out = Command::new(aggregator_bin())
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let all = stdout.clone() + &String::from_utf8(out.stderr).unwrap();
    (stdout, all)
}

fn cli(config: &Path, args: &[&str]) -> String {
    cli2(config, args).1
}

fn truth_ports(name: &str) -> std::collections::BTreeMap<(String, u64), (u64, u64)> {
    truth(name)["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    p["proto"].as_str().unwrap().to_string(),
                    p["port"].as_u64().unwrap(),
                ),
                (
                    p["packets"].as_u64().unwrap(),
                    p["sources"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

#[test]
fn replicas_on_clickhouse_serve_the_ground_truth_and_store_retries_once() {
    let ch = clickhouse::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"clickhouse\"\n[clickhouse]\nurl = \"{}\"\ndatabase = \"e2e\"\n",
            ch.url
        ),
    )
    .unwrap();
    // Serving before migrate is refused with the fix in the message.
    let out = Command::new(aggregator_bin())
        .arg("--config")
        .arg(&config)
        .args(["sensor", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("darkscope-aggregator migrate"));
    assert!(cli(&config, &["migrate"]).contains("applied [1]"));
    assert!(cli(&config, &["migrate"]).contains("already current"));
    let (token, _) = cli2(
        &config,
        &["sensor", "add", "--id", "s-ch", "--country", "JP"],
    );
    let token = token.trim().to_string();
    std::fs::write(d.join("s-ch.token"), &token).unwrap();

    let mut a = Aggregator::new(d);
    a.config = Some(config.clone());
    a.start();
    let mut b = Aggregator::new(d);
    b.config = Some(config.clone());
    b.start();
    let st = sensor_cmd(&a, d, "s-ch", "all-small.pcap", 86_400)
        .status()
        .unwrap();
    assert!(st.success());
    let want = truth_ports("all-small");
    assert_eq!(api_ports(&a), want);
    assert_eq!(api_ports(&b), want, "the other replica sees the same data");
    let (packets, windows) = stored_packets_and_windows(&b);
    assert_eq!(
        packets,
        truth("all-small")["packets_darknet"].as_u64().unwrap()
    );

    // The sensor's summaries, retried against the other replica: 200, stored once.
    let summaries = std::fs::read_to_string(d.join("s-ch.jsonl")).unwrap();
    let client = reqwest::blocking::Client::new();
    for line in summaries.lines() {
        let r = client
            .post(format!("{}/api/v1/summaries", b.url()))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(line.to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: serde_json::Value = r.json().unwrap();
        assert_eq!(v["duplicate"], true);
    }
    assert_eq!(stored_packets_and_windows(&a), (packets, windows));
    // One replica dies; the other keeps answering.
    a.kill9();
    assert_eq!(api_ports(&b), want);
    let src = b.get("/api/v1/sources/198.18.1.2");
    assert_eq!(src["fingerprints"][0], "masscan");
}
