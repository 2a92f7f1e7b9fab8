//! The analysts' console in a real browser: Debian's headless Chromium loads
//! each page from an aggregator filled by a real sensor replay, and the
//! numbers it renders must equal the API's. Screenshots of every page go to
//! `target/screenshots/` for a person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::browser::{field, number, render, render_with, Driver};
use common::*;
use darkscope_aggregator::detect::{DetectConfig, Detector};
use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::{Alert, Store};
use darkscope_common::{Proto, Timestamp};

const RANGE: &str = "from=2026-11-21T23:00:00Z&to=2026-11-22T00:00:00Z";

#[test]
fn console_pages_show_the_api_numbers_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-demo");
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-demo", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());

    // A surge alert on tcp/23, stored as the detector stores one (the
    // aggregator shares the SQLite file; WAL lets both write).
    let store = SqliteStore::open(&agg.db).unwrap();
    store
        .insert_alert(&Alert {
            id: 0,
            proto: Proto::Tcp,
            port: 23,
            scope: "global".into(),
            group: String::new(),
            start: Timestamp::parse_rfc3339("2026-11-21T23:22:00Z").unwrap(),
            severity: "medium".into(),
            baseline: 1.0,
            observed: 4,
            state: "open".into(),
            resolved_at: None,
        })
        .unwrap();
    drop(store);

    // Overview: the top port and its distinct sources as the API ranks them.
    let top = agg.get(&format!("/api/v1/ports/top?{RANGE}&limit=15"));
    let first = &top["ports"][0];
    let want_port = format!("{}/{}", first["proto"].as_str().unwrap(), first["port"]);
    let dom = render(&format!("{}/#/overview?{RANGE}", agg.url()), "overview.png");
    assert!(
        dom.contains("data-ready=\"overview\""),
        "page did not finish:\n{dom}"
    );
    assert_eq!(field(&dom, "top-port"), want_port);
    assert_eq!(
        number(&field(&dom, "top-port-sources")),
        first["sources"].as_u64().unwrap()
    );
    let o = agg.get(&format!("/api/v1/overview?{RANGE}"));
    assert_eq!(
        number(&field(&dom, "packets")),
        o["packets"].as_u64().unwrap()
    );
    assert_eq!(
        number(&field(&dom, "active-sensors")),
        o["active_sensors"].as_u64().unwrap()
    );
    let open = agg.get("/api/v1/alerts?state=open");
    assert_eq!(
        number(&field(&dom, "open-alerts")),
        open["alerts"].as_array().unwrap().len() as u64
    );
    assert_eq!(
        number(&field(&dom, "class-tcp_syn")),
        o["classes"]["tcp_syn"].as_u64().unwrap()
    );
    assert_eq!(
        field(&dom, "top-source"),
        o["top_sources"][0]["ip"].as_str().unwrap()
    );
    assert!(dom.contains("data-theme=\"light\""));
    assert!(dom.contains("<canvas"), "the chart drew nothing");
    assert!(
        !dom.contains("data-points=\"0\""),
        "the chart had no points"
    );

    // Dark, when the system is.
    let dom = render_with(
        &format!("{}/#/overview?{RANGE}", agg.url()),
        "overview-dark.png",
        &["--force-dark-mode"],
    );
    assert!(dom.contains("data-theme=\"dark\""), "{dom}");
    assert!(dom.contains("data-ready=\"overview\""));

    // Port page by permalink: the range comes back from the URL.
    let dom = render(&format!("{}/#/port/tcp/23?{RANGE}", agg.url()), "port.png");
    assert!(dom.contains("data-ready=\"port\""), "{dom}");
    assert_eq!(field(&dom, "port-title"), "tcp/23");
    assert_eq!(number(&field(&dom, "port-packets")), 4536);
    assert!(dom.contains("<canvas"));
    assert!(
        dom.contains("data-points=\"60\""),
        "one point per minute of the hour"
    );

    // Source lookup.
    let src = agg.get("/api/v1/sources/198.18.1.2");
    let dom = render(
        &format!("{}/#/source/198.18.1.2?{RANGE}", agg.url()),
        "source.png",
    );
    assert_eq!(
        number(&field(&dom, "source-packets")),
        src["packets"].as_u64().unwrap()
    );
    assert_eq!(field(&dom, "source-fingerprints"), "masscan");
    // Its ports over time: one line per busiest port, hourly.
    let n_ports = src["ports"].as_array().unwrap().len().min(8);
    assert!(
        dom.contains(&format!("data-series=\"{n_ports}\"")) && dom.contains("data-points=\"1\""),
        "one hour, {n_ports} ports:\n{dom}"
    );

    // Sensors.
    let dom = render(&format!("{}/#/sensors", agg.url()), "sensors.png");
    assert_eq!(field(&dom, "sensor-id"), "s-demo");
    let sn = &agg.get("/api/v1/sensors")["sensors"][0];
    let per = (sn["received"].as_f64().unwrap() / sn["windows"].as_f64().unwrap()).round() as u64;
    assert_eq!(number(&field(&dom, "sensor-received-per-window")), per);
    assert_eq!(
        field(&dom, "sensor-state"),
        "silent",
        "replayed data ended long ago"
    );

    // Sharing, on an aggregator without federation, says so.
    let dom = render(&format!("{}/#/sharing", agg.url()), "sharing-off.png");
    assert!(field(&dom, "no-federation").contains("not configured"));

    // Nothing may be fetched from elsewhere: the page only names local
    // assets, and the CSP forbids any other origin.
    let r = reqwest::blocking::get(format!("{}/", agg.url())).unwrap();
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    let html = r.text().unwrap();
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "external reference in {html}"
    );
}

/// An analyst signs in and clicks through the console: the numbers on each
/// page equal the API's, links and controls land on the views they name,
/// a permalink reopens the same view, and every request the pages made went
/// to this aggregator.
#[test]
fn an_analyst_signs_in_and_clicks_through_the_console() {
    let dir = tempfile::tempdir().unwrap();
    let mut agg = Aggregator::with_config(dir.path(), "query_auth = \"always\"\n");
    agg.add_sensor(dir.path(), "s-demo");
    let analyst = agg.admin(&["analyst", "add", "--name", "alice"]);
    let isp = agg.admin(&[
        "subscriber",
        "add",
        "--id",
        "isp",
        "--prefix",
        "198.18.0.0/16",
    ]);
    agg.start();
    assert!(sensor_cmd(&agg, dir.path(), "s-demo", "all-small.pcap", 60)
        .status()
        .unwrap()
        .success());
    // A surge scenario on tcp/23 a year earlier (steady ~30 sources a
    // minute, then 150 for 20 minutes), run through the real detector: the
    // alert it raises is the one the console must show.
    let store = SqliteStore::open(&agg.db).unwrap();
    for w in 0..230u64 {
        let n = if (180..200).contains(&w) {
            150
        } else {
            30 + (w % 4) as u32
        };
        let srcs: Vec<u32> = (0..n).map(|i| 0x0a00_0000 + i * 7 + 3).collect();
        store
            .insert_summary(&summary("s-surge", w, &srcs, 1), "JP")
            .unwrap();
    }
    let mut det = Detector::new(DetectConfig::default());
    det.history_us = 1000 * MIN;
    let mut opened = Vec::new();
    for w in 0..230u64 {
        let now = Timestamp(T0 + (w + 1) * MIN + det.grace_us);
        opened.extend(det.tick(&store, now).unwrap());
    }
    drop(store);
    assert_eq!(opened.len(), 1, "{opened:?}");
    let alert = opened[0].clone();
    let surge = format!(
        "from={}&to={}",
        Timestamp(T0 + 120 * MIN),
        Timestamp(T0 + 230 * MIN)
    );
    let api = |path: &str| agg.get_as(&analyst, path);

    let b = Driver::start();
    let base = agg.url();
    b.goto(&format!("{base}/#/overview?{RANGE}"));
    // No token yet: the console asks for one. A subscriber's token is not
    // an analyst's: still asked.
    b.wait_ready("signin");
    b.shot("signin.png");
    b.unready();
    b.type_into("#token", &isp);
    b.click("#signin button");
    b.wait_ready("signin");
    b.unready();
    b.type_into("#token", &analyst);
    b.click("#signin button");
    b.wait_ready("overview");
    b.js("performance.setResourceTimingBufferSize(100000)", vec![]);
    let top = api(&format!("/api/v1/ports/top?{RANGE}&limit=15"));
    let first = &top["ports"][0];
    let (proto, port) = (
        first["proto"].as_str().unwrap(),
        first["port"].as_u64().unwrap(),
    );
    assert_eq!(b.text("top-port"), format!("{proto}/{port}"));
    // A sparkline per top port, one point per step.
    let sparks = b.js(
        "return [...document.querySelectorAll('[data-test=spark]')].map(e => +e.dataset.points)",
        vec![],
    );
    let sparks = sparks.as_array().unwrap();
    assert_eq!(sparks.len(), top["ports"].as_array().unwrap().len());
    assert!(
        sparks.iter().all(|n| n.as_u64().unwrap() >= 30),
        "{sparks:?}"
    );
    b.shot("overview-signed-in.png");

    // Click the top port: its page, same range, the port's panels.
    b.unready();
    b.click("[data-test=top-port] a");
    b.wait_ready("port");
    assert!(
        b.url().contains(&format!("#/port/{proto}/{port}?"))
            && b.url().contains("from=2026-11-21T23"),
        "{}",
        b.url()
    );
    let d = api(&format!("/api/v1/ports/{proto}/{port}?{RANGE}&limit=20"));
    assert_eq!(
        number(&b.text("port-sources")),
        d["sources"].as_u64().unwrap()
    );
    assert_eq!(
        b.text("port-top-source"),
        d["top_sources"][0]["ip"].as_str().unwrap()
    );
    assert_eq!(
        number(&b.text("port-top-source-packets")),
        d["top_sources"][0]["packets"].as_u64().unwrap()
    );
    assert_eq!(b.text("port-sensor"), "s-demo");
    assert_eq!(b.text("port-country"), "JP");
    assert_eq!(
        number(&b.text("port-country-packets")),
        d["packets"].as_u64().unwrap()
    );
    b.shot("port-clicked.png");

    // The port with the alert, through the lookup box: fingerprint shares
    // and the alert line on its chart.
    b.unready();
    b.type_into("#lookup-port", "tcp/23");
    b.click("#lookup button");
    b.wait_ready("port");
    let d23 = api(&format!("/api/v1/ports/tcp/23?{RANGE}"));
    let mirai = d23["fingerprints"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["fingerprint"] == "mirai")
        .unwrap()["sources"]
        .as_u64()
        .unwrap();
    assert!(mirai >= 1, "the capture has a Mirai scanner on tcp/23");
    assert_eq!(number(&b.text("fp-mirai-sources")), mirai);
    b.shot("port-23.png");

    // Its busiest source, clicked: history with the feed that carried it.
    let ip = d23["top_sources"][0]["ip"].as_str().unwrap().to_string();
    b.unready();
    b.click("[data-test=port-top-source] a");
    b.wait_ready("source");
    assert_eq!(b.text("source-ip"), ip);
    let s = api(&format!("/api/v1/sources/{ip}"));
    assert_eq!(
        number(&b.text("source-packets")),
        s["packets"].as_u64().unwrap()
    );
    assert_eq!(b.text("source-feed"), "isp");
    assert_eq!(
        number(&b.text("source-feed-packets")),
        s["feeds"][0]["packets"].as_u64().unwrap()
    );
    b.shot("source-clicked.png");

    // Alerts from the menu: none in the capture's hour.
    b.unready();
    b.click("nav a[data-page=alerts]");
    b.wait_ready("alerts");
    assert_eq!(b.text("alert-count"), "0");
    // In the surge's hours: the detector's alert and its evidence chart.
    b.unready();
    b.goto(&format!("{base}/#/alerts?{surge}"));
    b.wait_ready("alerts");
    assert_eq!(b.text("alert-count"), "1");
    assert_eq!(b.text("alert-start"), alert.start.to_string());
    let ev = b.js(
        "return [...document.querySelectorAll('[data-test=evidence]')].map(e => [+e.dataset.points, +e.dataset.marks, e.querySelectorAll('canvas').length])",
        vec![],
    );
    assert_eq!(
        ev,
        serde_json::json!([[48, 1, 1]]),
        "8 hours in 10-minute steps"
    );
    b.shot("alerts-evidence.png");
    // The numbers behind it, from the window it started in.
    let d = api(&format!("/api/v1/alerts/{}", alert.id));
    let e = &d["evidence"];
    assert_eq!(e["sources"].as_u64().unwrap(), alert.observed);
    assert_eq!(e["sensors"][0]["sensor"], "s-surge");
    assert_eq!(e["countries"][0]["country"], "JP");
    assert_eq!(
        e["packets"].as_u64().unwrap(),
        alert.observed,
        "one packet per source"
    );
    assert_eq!(e["top_sources"].as_array().unwrap().len(), 10);
    assert!(b
        .text("evidence-who")
        .starts_with(&format!("first window: {} sources", alert.observed)));
    // Severity filters, kept in the URL.
    let other = if alert.severity == "low" {
        "high"
    } else {
        "low"
    };
    b.unready();
    b.click(&format!("[data-test=filter-severity-{other}]"));
    b.wait_ready("alerts");
    assert_eq!(b.text("alert-count"), "0");
    assert!(
        b.url().contains(&format!("severity={other}")),
        "{}",
        b.url()
    );
    b.unready();
    b.click(&format!("[data-test=filter-severity-{}]", alert.severity));
    b.wait_ready("alerts");
    assert_eq!(b.text("alert-count"), "1");
    // Its port, clicked: the hours around it, the alert marked on the chart.
    b.unready();
    b.click("[data-test=alert-port] a");
    b.wait_ready("port");
    assert_eq!(b.text("port-title"), "tcp/23");
    assert_eq!(b.text("alert-start"), alert.start.to_string());
    assert_eq!(
        b.js(
            "return +document.querySelector('#chart').dataset.marks",
            vec![]
        ),
        1
    );
    let around = api(&format!(
        "/api/v1/ports/tcp/23?from={}&to={}",
        Timestamp(alert.start.0 - 360 * MIN),
        Timestamp(alert.start.0 + 120 * MIN)
    ));
    assert_eq!(
        number(&b.text("port-sources")),
        around["sources"].as_u64().unwrap()
    );
    b.shot("port-alert.png");

    // Controls write the URL: a range preset and the scope.
    b.unready();
    b.select("#range-preset", "7d");
    b.wait_ready("port");
    let u = b.url();
    assert!(u.contains("range=7d") && !u.contains("from="), "{u}");
    b.unready();
    b.select("#scope", "global");
    b.wait_ready("port");
    assert!(b.url().contains("scope=global"), "{}", b.url());

    // A permalink reopens the same view, controls included.
    let link = format!("{base}/#/source/{ip}?{RANGE}&scope=global");
    b.goto(&format!("{base}/#/sensors"));
    b.wait_ready("sensors");
    b.unready();
    b.goto(&link);
    b.wait_ready("source");
    assert_eq!(b.text("source-ip"), ip);
    assert_eq!(
        b.js("return document.querySelector('#scope').value", vec![]),
        "global"
    );
    assert_eq!(
        b.js(
            "return document.querySelector('#range-preset').value",
            vec![]
        ),
        "custom"
    );
    assert_eq!(
        b.js("return document.querySelector('#range-from').value", vec![]),
        "2026-11-21T23:00"
    );

    // Every request any of these pages made went to this aggregator.
    let fetched = b.js(
        "return [location.href, ...performance.getEntriesByType('resource').map(e => e.name)]",
        vec![],
    );
    let fetched = fetched.as_array().unwrap();
    assert!(fetched.len() > 20, "{fetched:?}");
    for u in fetched {
        assert!(
            u.as_str().unwrap().starts_with(&format!("{base}/")),
            "a request left the aggregator: {u}"
        );
    }
}
