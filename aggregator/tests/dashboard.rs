//! The analysts' console in a real browser: Debian's headless Chromium loads
//! each page from an aggregator filled by a real sensor replay, and the
//! numbers it renders must equal the API's. Screenshots of every page go to
//! `target/screenshots/` for a person to look at.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::browser::{field, number, render};
use common::*;
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
        field(&dom, "top-source"),
        o["top_sources"][0]["ip"].as_str().unwrap()
    );
    assert!(dom.contains("<canvas"), "the chart drew nothing");
    assert!(
        !dom.contains("data-points=\"0\""),
        "the chart had no points"
    );

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

    // Sensors.
    let dom = render(&format!("{}/#/sensors", agg.url()), "sensors.png");
    assert_eq!(field(&dom, "sensor-id"), "s-demo");

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
