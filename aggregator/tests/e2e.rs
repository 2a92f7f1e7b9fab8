//! The sensor→aggregator path with real processes on loopback: a real
//! aggregator binary on a SQLite file, real sensor binaries replaying the
//! shared captures and uploading over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::process::{Child, Command};
use std::time::Duration;

#[test]
fn three_sensors_merge_to_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let caps = [
        ("s-masscan", "masscan"),
        ("s-nmap", "nmap"),
        ("s-udp", "udp"),
    ];
    for (id, _) in caps {
        agg.add_sensor(dir.path(), id);
    }
    agg.start();
    let mut children: Vec<Child> = caps
        .iter()
        .map(|(id, cap)| {
            sensor_cmd(&agg, dir.path(), id, &format!("{cap}.pcap"), 60)
                .spawn()
                .unwrap()
        })
        .collect();
    for c in &mut children {
        assert!(c.wait().unwrap().success());
    }
    // Merged truth: the captures' scanners are distinct hosts, so per-port
    // packets and distinct sources add up.
    let mut want: BTreeMap<(String, u64), (u64, u64)> = BTreeMap::new();
    for (_, cap) in caps {
        for p in truth(cap)["ports"].as_array().unwrap() {
            let e = want
                .entry((
                    p["proto"].as_str().unwrap().to_string(),
                    p["port"].as_u64().unwrap(),
                ))
                .or_default();
            e.0 += p["packets"].as_u64().unwrap();
            e.1 += p["sources"].as_u64().unwrap();
        }
    }
    assert_eq!(api_ports(&agg), want);
    // One source, everything known about it.
    let s = agg.get("/api/v1/sources/198.18.1.2");
    assert_eq!(s["packets"], 16384);
    assert_eq!(s["fingerprints"], serde_json::json!(["masscan"]));
    assert_eq!(s["sensors"], serde_json::json!(["s-masscan"]));
    // Its ports over time add up to its port totals.
    for p in s["ports"].as_array().unwrap().iter().take(8) {
        let hourly: u64 = s["port_hours"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["proto"] == p["proto"] && h["port"] == p["port"])
            .map(|h| h["packets"].as_u64().unwrap())
            .sum();
        assert_eq!(hourly, p["packets"].as_u64().unwrap(), "{p}");
    }
    // Series of tcp/22: masscan and nmap both hit it, merged with sketches.
    let series = agg.get(&format!("/api/v1/ports/tcp/22/series?{ALL_TIME}&step=1d"));
    let pts = series["points"].as_array().unwrap();
    let packets: u64 = pts.iter().map(|p| p["packets"].as_u64().unwrap()).sum();
    assert_eq!(packets, 4096 + 256);
    assert_eq!(
        pts.iter().map(|p| p["sources"].as_u64().unwrap()).max(),
        Some(2)
    );
    // All ports together, per day: every packet, every scanner once.
    let total = agg.get(&format!("/api/v1/series?{ALL_TIME}&step=1d"));
    let pts = total["points"].as_array().unwrap();
    let hosts: u64 = caps
        .iter()
        .map(|(_, cap)| truth(cap)["sources"].as_array().unwrap().len() as u64)
        .sum();
    assert_eq!(
        pts.iter()
            .map(|p| p["packets"].as_u64().unwrap())
            .sum::<u64>(),
        16384 + 4790 + 512
    );
    assert_eq!(
        pts.iter().map(|p| p["sources"].as_u64().unwrap()).max(),
        Some(hosts)
    );
    // Who sees tcp/22: each sensor's packets and sources are its own
    // capture's truth, the country merges them, the scanners rank by
    // packets with their fingerprints.
    let d = agg.get(&format!("/api/v1/ports/tcp/22?{ALL_TIME}"));
    let port_truth = |cap: &str| {
        truth(cap)["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["proto"] == "tcp" && p["port"] == 22)
            .cloned()
            .unwrap()
    };
    let (m, n) = (port_truth("masscan"), port_truth("nmap"));
    assert_eq!(
        d["sensors"],
        serde_json::json!([
            {"sensor": "s-masscan", "country": "JP", "packets": m["packets"], "sources": m["sources"]},
            {"sensor": "s-nmap", "country": "JP", "packets": n["packets"], "sources": n["sources"]},
        ]),
        "{d}"
    );
    let both = m["packets"].as_u64().unwrap() + n["packets"].as_u64().unwrap();
    assert_eq!(d["packets"], both);
    assert_eq!(d["sources"], 2);
    assert_eq!(
        d["countries"],
        serde_json::json!([{"country": "JP", "sensors": 2, "packets": both, "sources": 2}])
    );
    assert_eq!(d["top_sources"][0]["ip"], "198.18.1.2");
    assert_eq!(d["top_sources"][0]["packets"], m["packets"]);
    assert_eq!(
        d["top_sources"][0]["fingerprints"],
        serde_json::json!(["masscan"])
    );
    let shares: Vec<(&str, u64)> = d["fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["fingerprint"].as_str().unwrap(),
                f["sources"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shares,
        [
            ("mirai", 0),
            ("zmap", 0),
            ("masscan", 1),
            ("nmap", 1),
            ("none", 0)
        ]
    );
    // The nmap scanner, labelled by the sensor and kept by the aggregator.
    let s = agg.get("/api/v1/sources/198.18.1.4");
    assert_eq!(s["fingerprints"], serde_json::json!(["nmap"]));
    // Sensor health.
    let sensors = agg.get("/api/v1/sensors");
    for s in sensors["sensors"].as_array().unwrap() {
        assert!(s["windows"].as_u64().unwrap() >= 1, "{s}");
        assert_eq!(s["drop_rate"], 0.0);
    }
    let (packets, _) = stored_packets_and_windows(&agg);
    assert_eq!(packets, 16384 + 4790 + 512);
}

#[test]
fn aggregator_kill9_during_uploads_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-all");
    agg.start();
    // One-second windows: hundreds of uploads in flight.
    let mut sensor = sensor_cmd(&agg, dir.path(), "s-all", "all-small.pcap", 1)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    agg.kill9();
    // The kill landed mid-flow: summaries were still waiting in the spool.
    let waiting = std::fs::read_dir(dir.path().join("spool-s-all"))
        .unwrap()
        .count();
    assert!(waiting > 1, "kill came too late to test anything");
    std::thread::sleep(Duration::from_millis(1500));
    agg.start();
    assert!(sensor.wait().unwrap().success());
    let produced = lines(&dir.path().join("s-all.jsonl"));
    assert!(produced > 50);
    assert_eq!(stored_packets_and_windows(&agg), (30_346, produced));
    assert!(std::fs::read_dir(dir.path().join("spool-s-all/rejected"))
        .unwrap()
        .next()
        .is_none());
}

#[test]
fn sensor_kill9_mid_upload_then_rerun_stores_each_window_once() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-all");
    agg.start();
    let mut first = sensor_cmd(&agg, dir.path(), "s-all", "all-small.pcap", 1)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(150));
    first.kill().unwrap();
    first.wait().unwrap();
    let (_, stored_by_first) = stored_packets_and_windows(&agg);
    // The rerun finds the spool of the first run and re-reads the capture:
    // retried windows are acknowledged without being stored twice.
    assert!(sensor_cmd(&agg, dir.path(), "s-all", "all-small.pcap", 1)
        .status()
        .unwrap()
        .success());
    let produced = lines(&dir.path().join("s-all.jsonl"));
    assert!(
        stored_by_first < produced,
        "the first run was killed before it finished"
    );
    assert_eq!(stored_packets_and_windows(&agg), (30_346, produced));
}

#[test]
fn aggregator_outage_then_everything_arrives() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-out");
    // The aggregator is down while the sensor captures and spools.
    let mut sensor = sensor_cmd(&agg, dir.path(), "s-out", "all-small.pcap", 60)
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(2500));
    let spooled = std::fs::read_dir(dir.path().join("spool-s-out"))
        .unwrap()
        .count();
    assert!(spooled > 1, "summaries wait in the spool");
    agg.start();
    assert!(sensor.wait().unwrap().success());
    let produced = lines(&dir.path().join("s-out.jsonl"));
    assert_eq!(stored_packets_and_windows(&agg), (30_346, produced));
}

/// Posts a summary in its binary form (zstd), as sensors do by default.
/// A summary that a sensor of the first binary layout spooled (a real file:
/// what release 0.1.0 spooled for all-small.pcap, in `testdata/wire/`) is
/// taken under that layout's media type by an upgraded aggregator and stored
/// as that sensor wrote it (its JSON is beside it), fingerprints included.
#[test]
fn a_summary_in_the_first_binary_layout_is_stored_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let tok = agg.add_sensor(dir.path(), "golden-v1");
    agg.start();
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/wire");
    let json = std::fs::read(data.join("all-small-v1.json.zst")).unwrap();
    let written: darkscope_common::Summary =
        serde_json::from_slice(&zstd::decode_all(&json[..]).unwrap()).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/summaries", agg.url()))
        .bearer_auth(std::fs::read_to_string(tok).unwrap().trim())
        .header("Content-Type", darkscope_common::wire::BINARY_V1_MEDIA_TYPE)
        .header("Content-Encoding", "zstd")
        .body(std::fs::read(data.join("all-small-v1.bin.zst")).unwrap())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().unwrap());
    assert_eq!(
        stored_packets_and_windows(&agg),
        (written.totals.packets, 1)
    );
    for row in &written.sources {
        if row.fingerprints.is_empty() && row.packets < 100 {
            continue; // the spoofed one-packet sources
        }
        let s = agg.get(&format!("/api/v1/sources/{}", row.ip));
        assert_eq!(s["packets"], row.packets, "{}", row.ip);
        let fps: Vec<&str> = row.fingerprints.iter().map(|f| f.as_str()).collect();
        assert_eq!(s["fingerprints"], serde_json::json!(fps), "{}", row.ip);
    }
}

fn post_binary(agg: &Aggregator, token: &str, body: Vec<u8>) -> (u16, String) {
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/summaries", agg.url()))
        .bearer_auth(token)
        .header("Content-Type", darkscope_common::wire::BINARY_MEDIA_TYPE)
        .header("Content-Encoding", "zstd")
        .body(zstd::encode_all(&body[..], 3).unwrap())
        .send()
        .unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    (status, v["error"].as_str().unwrap_or("").to_string())
}

fn post(agg: &Aggregator, token: &str, encoding: Option<&str>, body: Vec<u8>) -> (u16, String) {
    let client = reqwest::blocking::Client::new();
    let mut rq = client
        .post(format!("{}/api/v1/summaries", agg.url()))
        .bearer_auth(token)
        .body(body);
    if let Some(e) = encoding {
        rq = rq.header("Content-Encoding", e);
    }
    let r = rq.send().unwrap();
    let status = r.status().as_u16();
    let v: Value = r.json().unwrap();
    (status, v["error"].as_str().unwrap_or("").to_string())
}

#[test]
fn bad_input_gets_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let tok_a = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-a")).unwrap();
    let tok_b = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-b")).unwrap();
    let tok_a = tok_a.trim();
    agg.start();
    // A real summary of s-a, stored once.
    let st = Command::new(sensor_bin())
        .arg("--read")
        .arg(testdata("zmap.pcap"))
        .args([
            "--darknet",
            DARKNET,
            "--id",
            "s-a",
            "--window",
            "86400",
            "--out",
        ])
        .arg(dir.path().join("a.jsonl"))
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(st.success());
    let good = std::fs::read_to_string(dir.path().join("a.jsonl")).unwrap();
    let good = good.lines().next().unwrap().as_bytes().to_vec();
    assert_eq!(post(&agg, tok_a, None, good.clone()).0, 201);
    let before = stored_packets_and_windows(&agg);
    assert_eq!(before, (3000, 1));
    assert_eq!(
        post(&agg, tok_a, None, good.clone()).0,
        200,
        "retry is idempotent"
    );

    let mut v: Value = serde_json::from_slice(&good).unwrap();
    // (case, Content-Encoding, body, expected status, expected message)
    type Case<'a> = (&'a str, Option<&'a str>, Vec<u8>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (
            "malformed",
            None,
            b"{not json".to_vec(),
            400,
            "not a valid summary",
        ),
        (
            "schema",
            None,
            {
                v["schema"] = 99.into();
                let b = serde_json::to_vec(&v).unwrap();
                v["schema"] = 1.into();
                b
            },
            400,
            "unsupported schema version 99",
        ),
        (
            "inconsistent",
            None,
            {
                v["totals"]["packets"] = 5.into();
                let b = serde_json::to_vec(&v).unwrap();
                v["totals"]["packets"] = 3000.into();
                b
            },
            400,
            "do not add up",
        ),
        (
            "clock far ahead",
            None,
            {
                let mut f = v.clone();
                f["window"]["start"] = "2099-01-01T00:00:00Z".into();
                f["window"]["end"] = "2099-01-01T00:01:00Z".into();
                serde_json::to_vec(&f).unwrap()
            },
            400,
            "more than a day in the future: the sensor's clock is wrong",
        ),
        (
            "clock at 1970",
            None,
            {
                let mut f = v.clone();
                f["window"]["start"] = "1970-01-01T00:05:00Z".into();
                f["window"]["end"] = "1970-01-01T00:06:00Z".into();
                serde_json::to_vec(&f).unwrap()
            },
            400,
            "before 2000: the sensor's clock is wrong",
        ),
        ("oversized", None, vec![b' '; 17 << 20], 413, "larger than"),
        (
            "zstd bomb",
            Some("zstd"),
            zstd::encode_all(&vec![b' '; 64 << 20][..], 19).unwrap(),
            413,
            "larger than",
        ),
        (
            "bad encoding",
            Some("br"),
            good.clone(),
            415,
            "unsupported Content-Encoding",
        ),
    ];
    for (name, enc, body, status, msg) in cases {
        let (s, e) = post(&agg, tok_a, enc, body);
        assert_eq!(s, status, "{name}: {e}");
        assert!(e.contains(msg), "{name}: '{e}' lacks '{msg}'");
    }
    // The binary form: the same summary is the same window (a retry);
    // garbage, another schema and inconsistent numbers get the same 400s.
    let sum: darkscope_common::Summary = serde_json::from_slice(&good).unwrap();
    let binary = |s: &darkscope_common::Summary| s.to_binary().unwrap();
    assert_eq!(
        post_binary(&agg, tok_a, binary(&sum)).0,
        200,
        "binary retry"
    );
    let mut other = sum.clone();
    other.schema = 7;
    let mut off = sum.clone();
    off.totals.packets = 5;
    for (name, body, msg) in [
        (
            "binary garbage",
            vec![1, 0xff, 0xff],
            "not a valid summary: binary form",
        ),
        (
            "binary schema",
            binary(&other),
            "unsupported schema version 7",
        ),
        ("binary inconsistent", binary(&off), "do not add up"),
    ] {
        let (s, e) = post_binary(&agg, tok_a, body);
        assert_eq!(s, 400, "{name}: {e}");
        assert!(e.contains(msg), "{name}: '{e}' lacks '{msg}'");
    }
    // Credentials: unknown token, another sensor's token, a revoked token.
    let (s, e) = post(&agg, "dst_not-a-token", None, good.clone());
    assert_eq!((s, e.as_str()), (401, "unknown token"));
    let (s, e) = post(&agg, tok_b.trim(), None, good.clone());
    assert_eq!(s, 403, "{e}");
    assert!(e.contains("belongs to sensor 's-b'"), "{e}");
    let st = Command::new(aggregator_bin())
        .arg("--database")
        .arg(&agg.db)
        .args(["sensor", "revoke", "s-a"])
        .output()
        .unwrap();
    assert!(st.status.success());
    let (s, e) = post(&agg, tok_a, None, good);
    assert_eq!(s, 401, "{e}");
    assert!(e.contains("revoked"), "{e}");
    // Nothing that was stored changed; the server is still fine.
    assert_eq!(stored_packets_and_windows(&agg), before);
    let m = reqwest::blocking::get(format!("{}/metrics", agg.url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        m.contains("darkscope_aggregator_summaries_rejected_total 11"),
        "{m}"
    );
}

#[test]
fn bad_query_parameters_get_400_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.start();
    for (path, msg) in [
        ("/api/v1/ports/top?from=yesterday", "RFC 3339"),
        ("/api/v1/ports/top?limit=0", "limit"),
        (
            "/api/v1/ports/top?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z",
            "before",
        ),
        ("/api/v1/ports/sctp/80/series", "unknown protocol"),
        ("/api/v1/ports/tcp/99999/series", "0-65535"),
        (
            "/api/v1/ports/tcp/80/series?step=1s&from=2026-01-01T00:00:00Z&to=2026-02-01T00:00:00Z",
            "too many steps",
        ),
        ("/api/v1/sources/not-an-ip", "not an IP"),
    ] {
        let r = reqwest::blocking::get(format!("{}{path}", agg.url())).unwrap();
        assert_eq!(r.status().as_u16(), 400, "{path}");
        let v: Value = r.json().unwrap();
        assert!(v["error"].as_str().unwrap().contains(msg), "{path}: {v}");
    }
    let r = reqwest::blocking::get(format!("{}/api/v1/sources/192.0.2.1", agg.url())).unwrap();
    assert_eq!(r.status().as_u16(), 404);
    let spec = agg.get("/api/v1/openapi.json");
    assert_eq!(spec["openapi"], "3.0.3");
}

#[test]
fn queries_need_an_analyst_token_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::with_config(dir.path(), "query_auth = \"always\"\n");
    let sensor_token = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-1")).unwrap();
    let analyst = agg.admin(&["analyst", "add", "--name", "alice"]);
    agg.start();
    let client = reqwest::blocking::Client::new();
    let status = |token: Option<&str>| {
        let mut rq = client.get(format!("{}/api/v1/ports/top", agg.url()));
        if let Some(t) = token {
            rq = rq.bearer_auth(t);
        }
        rq.send().unwrap().status().as_u16()
    };
    assert_eq!(status(None), 401);
    assert_eq!(
        status(Some(sensor_token.trim())),
        401,
        "a sensor token never reads"
    );
    assert_eq!(status(Some(&analyst)), 200);
    // The console page itself holds no data and loads; health stays open.
    assert_eq!(
        reqwest::blocking::get(format!("{}/", agg.url()))
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    assert_eq!(
        reqwest::blocking::get(format!("{}/healthz", agg.url()))
            .unwrap()
            .status()
            .as_u16(),
        200
    );
    let st = Command::new(aggregator_bin())
        .arg("--database")
        .arg(&agg.db)
        .args(["analyst", "revoke", "alice"])
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(status(Some(&analyst)), 401);
}

#[test]
fn a_detected_surge_reaches_the_webhook_signed_after_a_retry() {
    use darkscope_aggregator::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let (url, seen) = receiver();
    let secret = dir.path().join("hook.secret");
    std::fs::write(&secret, "s3cret\n").unwrap();
    let cfg = dir.path().join("agg.toml");
    std::fs::write(
        &cfg,
        format!(
            "detect_interval_secs = 1\n[[webhooks]]\nurl = \"{url}\"\nsecret_file = \"{}\"\n",
            secret.display()
        ),
    )
    .unwrap();
    agg.config = Some(cfg);
    agg.add_sensor(dir.path(), "s-1");
    {
        // Two hours of one-minute windows ending 5 minutes ago; tcp/23 goes
        // from ~30 to 150 distinct sources for the last 15 of them.
        let store = darkscope_aggregator::store::sqlite::SqliteStore::open(&agg.db).unwrap();
        let now = darkscope_common::Timestamp::now().0;
        let end = now - now % MIN - 5 * MIN;
        for w in 0..120u64 {
            let start = end - (120 - w) * MIN;
            let n = if w >= 105 { 150 } else { 28 + (w % 5) as u32 };
            let srcs: Vec<u32> = (0..n)
                .map(|i| 0x0a00_0000 + i * 7 + (w % 3) as u32)
                .collect();
            store
                .insert_summary(&summary_at("s-1", start, &srcs, 1), "JP")
                .unwrap();
        }
    }
    agg.start();
    let (_, first) = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("a delivery attempt");
    let (head, body) = seen
        .recv_timeout(Duration::from_secs(20))
        .expect("a retried delivery");
    assert_eq!(first, body, "the retry sends the same alert");
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["type"], "alert");
    assert_eq!(
        (v["alert"]["proto"].as_str(), v["alert"]["port"].as_u64()),
        (Some("tcp"), Some(23))
    );
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| panic!("no {name} header in {head}"))
    };
    let ts: u64 = header("x-darkscope-timestamp").parse().unwrap();
    assert_eq!(
        header("x-darkscope-signature"),
        darkscope_aggregator::webhook::sign(b"s3cret", ts, &body)
    );
    let alerts = agg.get("/api/v1/alerts?state=open");
    assert_eq!(alerts["alerts"].as_array().unwrap().len(), 1, "{alerts}");
    // The event stream starts with the open alerts.
    {
        use std::io::BufRead;
        let resp = reqwest::blocking::Client::new()
            .get(format!("{}/api/v1/alerts/stream", agg.url()))
            .send()
            .unwrap();
        assert!(resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"));
        let mut lines = std::io::BufReader::new(resp).lines();
        assert_eq!(lines.next().unwrap().unwrap(), "event: alert");
        let data = lines.next().unwrap().unwrap();
        let a: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
        assert_eq!(
            (a["port"].as_u64(), a["state"].as_str()),
            (Some(23), Some("open"))
        );
    }
    // The aggregator counts the delivery once it has read the 200.
    let t0 = std::time::Instant::now();
    loop {
        let m = reqwest::blocking::get(format!("{}/metrics", agg.url()))
            .unwrap()
            .text()
            .unwrap();
        if m.contains("darkscope_aggregator_webhooks_delivered_total 1") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(10), "{m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A sensor whose clock is off is reported: in the sensors API, in
/// `/metrics`, in the log once, and flagged on the console's Sensors page;
/// a sensor in step reads about zero.
#[test]
fn a_sensor_whose_clock_is_off_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    let token = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-1")).unwrap();
    let log = dir.path().join("agg.log");
    agg.start_logging(&log, "info");
    assert!(sensor_cmd(&agg, dir.path(), "s-1", "zmap.pcap", 60)
        .status()
        .unwrap()
        .success());
    let skew =
        |agg: &Aggregator| agg.get("/api/v1/sensors")["sensors"][0]["clock_skew_seconds"].as_f64();
    let s = skew(&agg).expect("the sensor stamps its uploads with its clock");
    assert!(s.abs() < 2.0, "in step: {s}");

    // The same sensor, its clock 90 s ahead (a retried window: stored once).
    let ahead = std::time::SystemTime::now() + Duration::from_secs(90);
    let first = std::fs::read_to_string(dir.path().join("s-1.jsonl")).unwrap();
    let r = reqwest::blocking::Client::new()
        .post(format!("{}/api/v1/summaries", agg.url()))
        .bearer_auth(token.trim())
        .header("Date", httpdate::fmt_http_date(ahead))
        .body(first.lines().next().unwrap().to_string())
        .send()
        .unwrap();
    assert_eq!(r.status().as_u16(), 200, "a duplicate, acknowledged");
    let s = skew(&agg).unwrap();
    assert!((88.0..=91.0).contains(&s), "90 s ahead: {s}");
    let metrics = reqwest::blocking::get(format!("{}/metrics", agg.url()))
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("darkscope_sensor_clock_skew_seconds{sensor=\"s-1\"} 8")
            || metrics.contains("darkscope_sensor_clock_skew_seconds{sensor=\"s-1\"} 9"),
        "{metrics}"
    );
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(logged.contains("sensor 's-1': its clock is +"), "{logged}");
    let dom = common::browser::render(&format!("{}/#/sensors", agg.url()), "sensors-clock.png");
    assert_eq!(common::browser::field(&dom, "sensor-state"), "clock off");
    assert!(common::browser::field(&dom, "sensor-clock").starts_with("+"));
}

/// A sensor started as root that switches to `nobody` once its input is
/// open: it read its token before, its spool is handed over, and every
/// window arrives. (Needs root; skipped otherwise.)
#[test]
fn a_sensor_that_drops_to_an_unprivileged_user_still_uploads_everything() {
    if !std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    {
        eprintln!("SKIPPED: switching user needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let mut agg = Aggregator::new(dir.path());
    let token = agg.add_sensor(dir.path(), "s-1");
    // Only root may read the token.
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    agg.start();
    let out = sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60)
        .args(["--user", "nobody"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("now running as nobody"), "{log}");
    let produced = lines(&dir.path().join("s-1.jsonl"));
    assert_eq!(
        stored_packets_and_windows(&agg),
        (
            truth("all-small")["packets_darknet"].as_u64().unwrap(),
            produced
        )
    );
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(dir.path().join("spool-s-1"))
            .unwrap()
            .uid(),
        65534,
        "the spool was handed over"
    );
}
