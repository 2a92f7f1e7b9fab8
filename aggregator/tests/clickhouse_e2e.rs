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
    let out = run_ok(
        Command::new(aggregator_bin())
            .arg("--config")
            .arg(config)
            .args(args),
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let all = stdout.clone() + &String::from_utf8(out.stderr).unwrap();
    (stdout, all)
}

fn cli(config: &Path, args: &[&str]) -> String {
    cli2(config, args).1
}

fn truth_ports(name: &str) -> std::collections::BTreeMap<(String, u64), (u64, u64)> {
    port_map(&truth(name)["ports"])
}

/// An aggregator config on ClickHouse database `db` of `ch`, plus `extra` lines.
fn ch_config(dir: &Path, ch: &clickhouse::Server, db: &str, extra: &str) -> std::path::PathBuf {
    let config = dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"clickhouse\"\n{extra}[clickhouse]\nurl = \"{}\"\ndatabase = \"{db}\"\n",
            ch.url
        ),
    )
    .unwrap();
    config
}

#[test]
fn replicas_on_clickhouse_serve_the_ground_truth_and_store_retries_once() {
    let ch = clickhouse::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = ch_config(d, &ch, "e2e", "");
    // Serving before migrate is refused with the fix in the message.
    let out = Command::new(aggregator_bin())
        .arg("--config")
        .arg(&config)
        .args(["sensor", "list"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("darkscope-aggregator migrate"));
    assert!(cli(&config, &["migrate"]).contains("applied [1, 2, 3, 4, 5]"));
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

fn wait_for(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let t0 = std::time::Instant::now();
    while !f() {
        assert!(
            t0.elapsed().as_secs() < secs,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn leads(agg: &Aggregator) -> bool {
    agg.get("/api/v1/cluster")["leader"] == true
}

fn alerts(agg: &Aggregator) -> Vec<(u64, String)> {
    let v = agg.get("/api/v1/alerts");
    v["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["port"].as_u64().unwrap(),
                a["start"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Detection runs on one replica: the one up longest leads, alone raises
/// the surge alert; killed, the other takes over within the lease, raises
/// the next surge (which arrived late) and does not raise the first again.
#[test]
fn one_replica_leads_detection_and_another_takes_over_when_it_dies() {
    use darkscope_aggregator::store::Store;
    let ch = clickhouse::Server::start();
    let store = ch.store("lead");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = ch_config(d, &ch, "lead", "detect_interval_secs = 1\n");
    // Four hours of one-minute windows ending three minutes ago; tcp/23
    // rises fivefold for the last twenty.
    let now = darkscope_common::Timestamp::now().0;
    let end = now - now % MIN - 3 * MIN;
    let first = end - 240 * MIN;
    let srcs =
        |n: u32, salt: u32| -> Vec<u32> { (0..n).map(|i| 0x0a00_0000 + i * 7 + salt).collect() };
    for w in 0..240u64 {
        let n = if w >= 220 { 150 } else { 28 + (w % 5) as u32 };
        store
            .insert_summary(
                &summary_at("a", first + w * MIN, &srcs(n, (w % 3) as u32), 1),
                "JP",
            )
            .unwrap();
    }
    let mut a = Aggregator::new(d);
    a.config = Some(config.clone());
    a.start();
    wait_for("A to lead", 20, || leads(&a));
    let mut b = Aggregator::new(d);
    b.config = Some(config.clone());
    b.start();
    wait_for("the tcp/23 alert", 60, || !alerts(&a).is_empty());
    wait_for("B to see two replicas", 20, || {
        b.get("/api/v1/cluster")["replicas"]
            .as_array()
            .unwrap()
            .len()
            == 2
    });
    assert!(!leads(&b), "A is older: B follows");
    std::thread::sleep(std::time::Duration::from_secs(3));
    let first_alerts = alerts(&b);
    assert_eq!(first_alerts.len(), 1, "{first_alerts:?}");
    assert_eq!(first_alerts[0].0, 23);

    // The leader dies; a new port's surge arrives late, in the last windows.
    a.kill9();
    for w in 237..240u64 {
        let mut s = summary_at("b", first + w * MIN, &srcs(150, 99), 1);
        s.ports[0].port = 2323;
        store.insert_summary(&s, "JP").unwrap();
    }
    wait_for("B to take over", 40, || leads(&b));
    wait_for("the tcp/2323 alert", 60, || alerts(&b).len() >= 2);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut all = alerts(&b);
    all.sort();
    assert_eq!(all.len(), 2, "no alert raised twice: {all:?}");
    assert_eq!((all[0].0, all[1].0), (23, 2323));
    assert_eq!(all[0], first_alerts[0]);
    let m = reqwest::blocking::get(format!("{}/metrics", b.url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(m.contains("darkscope_aggregator_leader 1"));
}

/// A migrated ClickHouse database `db` with sensor `s-all` registered (its
/// token in `d/s-all.token`) and an aggregator started on it.
fn one_sensor_aggregator(
    d: &Path,
    ch: &clickhouse::Server,
    db: &str,
) -> (std::path::PathBuf, Aggregator) {
    let config = ch_config(d, ch, db, "");
    cli(&config, &["migrate"]);
    let (token, _) = cli2(
        &config,
        &["sensor", "add", "--id", "s-all", "--country", "JP"],
    );
    std::fs::write(d.join("s-all.token"), token.trim()).unwrap();
    let mut a = Aggregator::new(d);
    a.config = Some(config.clone());
    a.start();
    (config, a)
}

/// A sensor uploading to two replicas (`--aggregator A,B`); A is killed
/// with -9 mid-flow. The uploader fails over to B: every window is stored
/// exactly once, the totals equal the capture's.
#[test]
fn killing_a_replica_during_ingest_loses_and_duplicates_nothing() {
    let ch = clickhouse::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (config, mut a) = one_sensor_aggregator(d, &ch, "fail");
    let mut b = Aggregator::new(d);
    b.config = Some(config.clone());
    b.start();
    // One-second windows: hundreds of uploads, first to A, then to B.
    let cmd = sensor_cmd(&a, d, "s-all", "all-small.pcap", 1);
    let args: Vec<String> = cmd
        .get_args()
        .map(|x| x.to_string_lossy().into_owned())
        .collect();
    let mut sensor = Command::new(cmd.get_program());
    for x in &args {
        if *x == a.url() {
            sensor.arg(format!("{},{}", a.url(), b.url()));
        } else {
            sensor.arg(x);
        }
    }
    sensor.env("RUST_LOG", "warn");
    let mut sensor = sensor.spawn().unwrap();
    wait_for("A to store a few windows", 30, || {
        stored_packets_and_windows(&a).1 >= 3
    });
    a.kill9();
    let before_kill = stored_packets_and_windows(&b).1;
    assert!(sensor.wait().unwrap().success());
    let produced = lines(&d.join("s-all.jsonl"));
    assert!(produced > 50);
    assert!(
        before_kill < produced,
        "the kill came after every window was stored: nothing tested"
    );
    assert_eq!(stored_packets_and_windows(&b), (30_346, produced));
    assert!(
        std::fs::read_dir(d.join("spool-s-all"))
            .unwrap()
            .filter_map(|e| e.ok())
            .all(|e| e.file_type().unwrap().is_dir()),
        "spool drained"
    );
}

/// ClickHouse itself killed with -9 while a sensor uploads: the aggregator
/// answers with storage errors, the sensor keeps its windows and retries,
/// and once ClickHouse is back (no operator touches the aggregator) every
/// window is stored exactly once with the capture's totals.
#[test]
fn killing_clickhouse_during_ingest_loses_and_duplicates_nothing() {
    let mut ch = clickhouse::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (_, a) = one_sensor_aggregator(d, &ch, "chkill");
    let mut sensor = sensor_cmd(&a, d, "s-all", "all-small.pcap", 1)
        .spawn()
        .unwrap();
    wait_for("a few windows stored", 30, || {
        stored_packets_and_windows(&a).1 >= 3
    });
    ch.kill9();
    std::thread::sleep(std::time::Duration::from_secs(3));
    let r = reqwest::blocking::get(format!("{}/api/v1/sensors", a.url())).unwrap();
    assert!(
        r.status().is_server_error(),
        "the store is gone: {}",
        r.status()
    );
    assert!(
        sensor.try_wait().unwrap().is_none(),
        "the sensor is still retrying"
    );
    ch.restart();
    assert!(sensor.wait().unwrap().success());
    let produced = lines(&d.join("s-all.jsonl"));
    assert!(produced > 50);
    assert_eq!(stored_packets_and_windows(&a), (30_346, produced));
    assert!(
        std::fs::read_dir(d.join("spool-s-all/rejected"))
            .unwrap()
            .next()
            .is_none(),
        "nothing turned away"
    );
}
