//! Who reaches what, hostile parameters, and secrets in logs, against a
//! real aggregator process (SQLite, and the injection strings on ClickHouse
//! too), filled by a real sensor replay.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

fn cli(args: &[&str]) -> String {
    let out = run_ok(Command::new(aggregator_bin()).args(args));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

struct Tokens {
    sensor: String,
    analyst: String,
    subscriber: String,
    peer: String,
}

/// An aggregator that requires tokens everywhere, with one credential of
/// each kind; its log goes to `dir/aggregator.log` at debug level.
fn setup(dir: &Path) -> (Aggregator, Tokens) {
    let db = dir.join("darkscope.db");
    let db_s = db.to_str().unwrap();
    let sensor = cli(&[
        "--database",
        db_s,
        "sensor",
        "add",
        "--id",
        "s-sec",
        "--country",
        "JP",
    ]);
    let analyst = cli(&["--database", db_s, "analyst", "add", "--name", "alice"]);
    let subscriber = cli(&[
        "--database",
        db_s,
        "subscriber",
        "add",
        "--id",
        "isp",
        "--prefix",
        "198.18.0.0/16",
    ]);
    let peer = darkscope_aggregator::auth::new_token();
    let key = dir.join("fed.key");
    std::fs::write(&key, "ab".repeat(32)).unwrap();
    let config = dir.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "query_auth = \"always\"\n[federation]\nid = \"jp\"\nkey_file = \"{}\"\n[[federation.peers]]\nid = \"th\"\ninbound_token_sha256 = \"{}\"\n",
            key.display(),
            darkscope_aggregator::federation::hex(&darkscope_aggregator::auth::token_hash(&peer))
        ),
    )
    .unwrap();
    std::fs::write(dir.join("s-sec.token"), &sensor).unwrap();
    let mut agg = Aggregator::new(dir);
    agg.config = Some(config);
    agg.start_logging(&dir.join("aggregator.log"), "debug");
    (
        agg,
        Tokens {
            sensor,
            analyst,
            subscriber,
            peer,
        },
    )
}

fn status(agg: &Aggregator, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> u16 {
    let c = reqwest::blocking::Client::new();
    let url = format!("{}{path}", agg.url());
    let mut r = if method == "POST" {
        c.post(url).body(body.to_vec())
    } else {
        c.get(url)
    };
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    r.send().unwrap().status().as_u16()
}

#[test]
fn each_credential_reaches_only_its_own_endpoints_and_no_secret_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (agg, t) = setup(d);
    // A real replay, logged at debug level, so the logs have work to show.
    let mut sensor = sensor_cmd(&agg, d, "s-sec", "all-small.pcap", 60);
    sensor.env("RUST_LOG", "debug").stderr(Stdio::piped());
    let out = sensor.output().unwrap();
    assert!(out.status.success());
    let sensor_log = String::from_utf8_lossy(&out.stderr).to_string();
    let summary = std::fs::read_to_string(d.join("s-sec.jsonl")).unwrap();
    let summary = summary.lines().next().unwrap().as_bytes().to_vec();
    // An alert to look at, stored as the detector stores one.
    {
        use darkscope_aggregator::store::{sqlite::SqliteStore, Alert, Store};
        let store = SqliteStore::open(&agg.db).unwrap();
        let id = store
            .insert_alert(&Alert {
                id: 0,
                proto: darkscope_common::Proto::Tcp,
                port: 23,
                scope: "local".into(),
                group: String::new(),
                start: darkscope_common::Timestamp::parse_rfc3339("2026-11-21T23:22:00Z").unwrap(),
                severity: "high".into(),
                baseline: 1.0,
                observed: 4,
                state: "open".into(),
                resolved_at: None,
            })
            .unwrap();
        assert_eq!(id, 1);
    }

    let q = ALL_TIME;
    let endpoints: Vec<(&str, String, &str)> = vec![
        // (method, path, who may)
        ("POST", "/api/v1/summaries".into(), "sensor"),
        ("GET", format!("/api/v1/ports/top?{q}"), "analyst"),
        ("GET", format!("/api/v1/ports/tcp/23/series?{q}"), "analyst"),
        ("GET", format!("/api/v1/ports/tcp/23?{q}"), "analyst"),
        ("GET", format!("/api/v1/series?{q}"), "analyst"),
        ("GET", "/api/v1/sources/198.18.1.2".into(), "analyst"),
        ("GET", "/api/v1/sensors".into(), "analyst"),
        ("GET", format!("/api/v1/overview?{q}"), "analyst"),
        ("GET", "/api/v1/alerts".into(), "analyst"),
        ("GET", "/api/v1/alerts/1".into(), "analyst"),
        ("GET", "/api/v1/federation/peers".into(), "analyst"),
        ("GET", "/api/v1/federation/audit".into(), "analyst"),
        ("GET", "/api/v1/cluster".into(), "analyst"),
        (
            "GET",
            "/api/v1/feeds/events.json?date=2026-11-21".into(),
            "subscriber",
        ),
        (
            "GET",
            "/api/v1/feeds/events.csv?date=2026-11-21".into(),
            "subscriber",
        ),
        (
            "GET",
            "/api/v1/feeds/events.json?since=2026-11-21T00:00:00Z".into(),
            "subscriber",
        ),
        (
            "GET",
            "/api/v1/feeds/events.stix?date=2026-11-21".into(),
            "subscriber",
        ),
        ("GET", "/taxii2/".into(), "subscriber"),
        ("GET", "/taxii2/feeds/collections/".into(), "subscriber"),
        ("GET", "/api/v1/federation/changes?cursor=0".into(), "peer"),
    ];
    let who: [(&str, Option<&str>); 5] = [
        ("sensor", Some(&t.sensor)),
        ("analyst", Some(&t.analyst)),
        ("subscriber", Some(&t.subscriber)),
        ("peer", Some(&t.peer)),
        ("nobody", None),
    ];
    for (method, path, owner) in &endpoints {
        for (name, token) in who {
            let got = status(&agg, method, path, token, &summary);
            if name == *owner {
                assert!(got < 300, "{name} on {method} {path}: {got}");
            } else {
                assert_eq!(got, 401, "{name} must not reach {method} {path}");
            }
        }
    }
    // A revoked analyst is shut out at once.
    cli(&[
        "--database",
        agg.db.to_str().unwrap(),
        "analyst",
        "revoke",
        "alice",
    ]);
    assert_eq!(
        status(&agg, "GET", "/api/v1/sensors", Some(&t.analyst), b""),
        401
    );

    // No token appears in either log, at debug level.
    let agg_log = std::fs::read_to_string(d.join("aggregator.log")).unwrap();
    assert!(
        agg_log.len() > 100,
        "the aggregator logged nothing: {agg_log}"
    );
    for (name, secret) in [
        ("sensor", &t.sensor),
        ("analyst", &t.analyst),
        ("subscriber", &t.subscriber),
        ("peer", &t.peer),
    ] {
        assert!(
            !agg_log.contains(secret.as_str()),
            "the {name} token is in the aggregator log"
        );
        assert!(
            !sensor_log.contains(secret.as_str()),
            "the {name} token is in the sensor log"
        );
    }
    assert!(
        !agg_log.contains(&"ab".repeat(32)),
        "the federation key is in the log"
    );
}

/// Strings an attacker would put in a query parameter.
const HOSTILE: &[&str] = &[
    "' OR '1'='1",
    "x'; DROP TABLE windows; --",
    "\\' OR 1=1 --",
    "1) UNION SELECT * FROM sensors --",
    "%27%20OR%201%3D1",
    "@th/s-1",
    "*",
    "**JP",
    "\u{0}",
];

fn hostile_queries(agg: &Aggregator, token: Option<&str>) {
    let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let before = agg.get(&format!("/api/v1/overview?{ALL_TIME}"));
    for h in HOSTILE {
        let e = enc(h);
        let paths = [
            format!("/api/v1/ports/top?{ALL_TIME}&sensor={e}"),
            format!("/api/v1/ports/top?{ALL_TIME}&country={e}"),
            format!("/api/v1/ports/top?{ALL_TIME}&proto={e}"),
            format!("/api/v1/ports/top?{ALL_TIME}&limit={e}"),
            format!("/api/v1/ports/top?{ALL_TIME}&scope={e}"),
            format!("/api/v1/ports/top?from={e}"),
            format!("/api/v1/ports/{e}/23/series?{ALL_TIME}"),
            format!("/api/v1/ports/tcp/{e}/series?{ALL_TIME}"),
            format!("/api/v1/ports/tcp/23/series?{ALL_TIME}&step={e}"),
            format!("/api/v1/ports/{e}/23?{ALL_TIME}"),
            format!("/api/v1/ports/tcp/23?{ALL_TIME}&limit={e}"),
            format!("/api/v1/series?{ALL_TIME}&step={e}"),
            format!("/api/v1/sources/{e}"),
            format!("/api/v1/overview?{ALL_TIME}&scope={e}"),
            format!("/api/v1/alerts?state={e}"),
            format!("/api/v1/alerts?since={e}"),
            format!("/api/v1/federation/audit?peer={e}"),
            format!("/api/v1/sensors?scope={e}"),
        ];
        for p in &paths {
            let got = status(agg, "GET", p, token, b"");
            assert!(
                got == 200 || got == 400 || got == 404,
                "{p}: {got} (a parameter must never reach the database as SQL)"
            );
        }
        // A hostile sensor or country filter matches nothing.
        let v = agg.get(&format!("/api/v1/ports/top?{ALL_TIME}&sensor={e}"));
        assert!(v["ports"].as_array().unwrap().is_empty(), "{h}");
    }
    assert_eq!(agg.get(&format!("/api/v1/overview?{ALL_TIME}")), before);
}

#[test]
fn hostile_query_parameters_are_data_never_sql_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-inj");
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-inj", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    hostile_queries(&agg, None);
}

#[test]
fn hostile_query_parameters_are_data_never_sql_on_clickhouse() {
    let ch = clickhouse::Server::start();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let config = d.join("aggregator.toml");
    std::fs::write(
        &config,
        format!(
            "storage = \"clickhouse\"\n[clickhouse]\nurl = \"{}\"\ndatabase = \"inj\"\n",
            ch.url
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    cli(&["--config", c, "migrate"]);
    let token = cli(&[
        "--config",
        c,
        "sensor",
        "add",
        "--id",
        "s-inj",
        "--country",
        "JP",
    ]);
    std::fs::write(d.join("s-inj.token"), token).unwrap();
    let mut agg = Aggregator::new(d);
    agg.config = Some(config.clone());
    agg.start();
    assert!(sensor_cmd(&agg, d, "s-inj", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    hostile_queries(&agg, None);
}

/// Each credential has its own budget: past its burst one analyst gets 429
/// with Retry-After, another is unaffected, and the limited one is back
/// once its bucket refills.
#[test]
fn rate_limits_apply_per_credential() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let db = d.join("darkscope.db");
    let db_s = db.to_str().unwrap();
    let alice = cli(&["--database", db_s, "analyst", "add", "--name", "alice"]);
    let bob = cli(&["--database", db_s, "analyst", "add", "--name", "bob"]);
    let config = d.join("limits.toml");
    std::fs::write(
        &config,
        "query_auth = \"always\"\n[limits]\nrequests_per_minute = 60\nburst = 5\n",
    )
    .unwrap();
    let mut agg = Aggregator::new(d);
    agg.config = Some(config);
    agg.start();
    let c = reqwest::blocking::Client::new();
    let get = |token: &str| {
        c.get(format!("{}/api/v1/sensors", agg.url()))
            .bearer_auth(token)
            .send()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(get(&alice).status(), 200);
    }
    let r = get(&alice);
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert_eq!(get(&bob).status(), 200, "bob has his own budget");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(get(&alice).status(), 200, "one request per second refills");
    // Health checks from the host are never limited.
    for _ in 0..20 {
        assert!(reqwest::blocking::get(format!("{}/healthz", agg.url()))
            .unwrap()
            .status()
            .is_success());
    }
}

/// Request heads are bounded: a client that sends its headers too slowly
/// (slowloris) is disconnected, a head that is too large or has too many
/// fields is answered 431, and the aggregator keeps serving everyone else.
#[test]
fn request_heads_are_bounded_in_time_size_and_count() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::with_config(dir.path(), "[limits]\nheader_timeout_secs = 1\n");
    agg.start();
    let addr = agg.url().trim_start_matches("http://").to_string();
    // What the server sends before it closes the connection.
    let answer = |head: &[u8], pause: Option<Duration>| -> (String, Duration) {
        let mut c = std::net::TcpStream::connect(&addr).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let t0 = std::time::Instant::now();
        let _ = c.write_all(head);
        if let Some(p) = pause {
            std::thread::sleep(p);
            let _ = c.write_all(b"X-Late: 1\r\n");
        }
        let mut got = Vec::new();
        let _ = c.read_to_end(&mut got);
        (String::from_utf8_lossy(&got).into_owned(), t0.elapsed())
    };
    // Slowloris: half a head, then silence.
    let (got, took) = answer(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\n",
        Some(Duration::from_millis(200)),
    );
    assert!(!got.contains("200 OK"), "{got}");
    assert!(took < Duration::from_secs(5), "held for {took:?}");
    // A 100 KB header, and 200 header fields.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let (got, _) = answer(big.as_bytes(), None);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    let many = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..200)
            .map(|i| format!("X-{i}: y\r\n"))
            .collect::<String>()
    );
    let (got, _) = answer(many.as_bytes(), None);
    assert!(got.starts_with("HTTP/1.1 431"), "{got}");
    // Everyone else is served.
    let (got, _) = answer(
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        None,
    );
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

/// A request that takes too long is answered 408 and frees its place;
/// while it holds the only place in flight, others get 503.
#[test]
fn slow_requests_time_out_and_the_in_flight_cap_turns_others_away() {
    use std::io::{Read, Write};
    use std::time::Duration;
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::with_config(
        dir.path(),
        "[limits]\nmax_in_flight = 1\nrequest_timeout_secs = 2\n",
    );
    let token = std::fs::read_to_string(agg.add_sensor(dir.path(), "s-1")).unwrap();
    agg.start();
    let addr = agg.url().trim_start_matches("http://").to_string();
    // An upload whose body never finishes.
    let mut slow = std::net::TcpStream::connect(&addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    write!(
        slow,
        "POST /api/v1/summaries HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {}\r\nContent-Length: 5000\r\n\r\n{{\"schema\":1,",
        token.trim()
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let status = || {
        reqwest::blocking::get(format!("{}/api/v1/sensors", agg.url()))
            .unwrap()
            .status()
            .as_u16()
    };
    assert_eq!(status(), 503, "the only place is taken");
    let t0 = std::time::Instant::now();
    let mut got = Vec::new();
    let _ = slow.read_to_end(&mut got);
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert_eq!(status(), 200, "its place is free again");
}
