//! Surge detection end to end through the store: summaries with a steady
//! population of sources on tcp/23 from two sensors, then a fivefold rise;
//! the detector opens one alert within two windows of the onset, served by
//! the store as the API serves it, and resolves it when the rise ends. A
//! flood of packets from the same sources raises nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{summary, MIN, T0};
use darkscope_aggregator::detect::{DetectConfig, Detector};
use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::Store;
use darkscope_common::{Proto, Timestamp};

fn sources(n: u32, salt: u32) -> Vec<u32> {
    (0..n).map(|i| 0x0a00_0000 + i * 7 + salt).collect()
}

#[test]
fn fivefold_rise_in_distinct_sources_opens_and_resolves_one_alert() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("d.db")).unwrap();
    let onset = 180u64;
    for w in 0..260u64 {
        // Background: ~30 sources per sensor, a different sample each window.
        let n = if (onset..onset + 20).contains(&w) {
            150
        } else {
            28 + (w % 5) as u32
        };
        // A flood: window 100 has the same sources sending 1,000× the packets.
        let per = if w == 100 { 1000 } else { 1 };
        store
            .insert_summary(&summary("a", w, &sources(n, (w % 3) as u32), per), "JP")
            .unwrap();
        store
            .insert_summary(
                &summary("b", w, &sources(n / 2, 5 + (w % 2) as u32), per),
                "DE",
            )
            .unwrap();
    }
    let mut d = Detector::new(DetectConfig::default());
    d.history_us = 1000 * MIN;
    // Feed window by window, as the janitor does every minute.
    let mut opened = Vec::new();
    for w in 0..260u64 {
        let now = Timestamp(T0 + (w + 1) * MIN + d.grace_us);
        opened.extend(d.tick(&store, now).unwrap());
    }
    assert_eq!(opened.len(), 1, "{opened:?}");
    let a = &opened[0];
    assert_eq!((a.proto, a.port), (Proto::Tcp, 23));
    let delay = (a.start.0 - T0) / MIN - onset;
    assert!(delay <= 2, "detected {delay} windows after the onset");
    assert!(a.observed >= 2 * a.baseline as u64, "{a:?}");
    let stored = store.alerts(Timestamp(T0), None).unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].state, "resolved", "{stored:?}");
    assert!(store
        .alerts(Timestamp(T0), Some("open"))
        .unwrap()
        .is_empty());
}

/// A campaign that starts abroad: a peer's sensor sees a fivefold rise that
/// ours does not. The detector on the global view raises it (scope
/// `global`); on the local view nothing happens.
#[test]
fn a_rise_seen_only_by_a_peer_alerts_on_the_global_view() {
    use darkscope_aggregator::store::Scope;
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("g.db")).unwrap();
    let onset = 180u64;
    for w in 0..230u64 {
        store
            .insert_summary(&summary("a", w, &sources(28 + (w % 5) as u32, 1), 1), "JP")
            .unwrap();
        let n = if (onset..onset + 20).contains(&w) {
            150
        } else {
            30 + (w % 4) as u32
        };
        store
            .import_summary(&summary("@th/s-1", w, &sources(n, 9000), 1), "TH")
            .unwrap();
    }
    let run = |scope| {
        let mut d = Detector::new(DetectConfig {
            scope,
            ..Default::default()
        });
        d.history_us = 1000 * MIN;
        let mut opened = Vec::new();
        for w in 0..230u64 {
            let now = Timestamp(T0 + (w + 1) * MIN + d.grace_us);
            opened.extend(d.tick(&store, now).unwrap());
        }
        opened
    };
    assert!(run(Scope::Local).is_empty());
    let g = run(Scope::Global);
    assert_eq!(g.len(), 1, "{g:?}");
    assert_eq!(
        (g[0].proto, g[0].port, g[0].scope.as_str()),
        (Proto::Tcp, 23, "global")
    );
    assert!((g[0].start.0 - T0) / MIN - onset <= 2);
}

/// A detector that starts over the same history — the aggregator restarted,
/// or another replica took over as leader — adopts the alert already
/// stored instead of raising it twice.
#[test]
fn a_restarted_or_new_leader_detector_does_not_duplicate_alerts() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
    for w in 0..230u64 {
        let n = if (180..200).contains(&w) {
            150
        } else {
            30 + (w % 4) as u32
        };
        store
            .insert_summary(&summary("a", w, &sources(n, 3), 1), "JP")
            .unwrap();
    }
    let run = || {
        let mut d = Detector::new(DetectConfig::default());
        d.history_us = 1000 * MIN;
        let mut opened = Vec::new();
        for w in 0..230u64 {
            let now = Timestamp(T0 + (w + 1) * MIN + d.grace_us);
            opened.extend(d.tick(&store, now).unwrap());
        }
        opened
    };
    assert_eq!(run().len(), 1);
    assert!(run().is_empty(), "the second detector announced it again");
    assert_eq!(store.alerts(Timestamp(T0), None).unwrap().len(), 1);
}

/// A port nobody scanned, suddenly hit by many sources (a new exploit):
/// the new-port rule fires in the first window, even though the detector
/// never saw the port before.
#[test]
fn a_port_that_appears_with_many_sources_alerts_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("n.db")).unwrap();
    for w in 0..100u64 {
        store
            .insert_summary(&summary("a", w, &sources(30, (w % 3) as u32), 1), "JP")
            .unwrap();
        if w >= 90 {
            let mut s = summary("b", w, &sources(80, 500), 1);
            s.ports[0].port = 8443;
            store.insert_summary(&s, "JP").unwrap();
        }
    }
    let mut d = Detector::new(DetectConfig::default());
    d.history_us = 1000 * MIN;
    let mut opened = Vec::new();
    for w in 0..100u64 {
        opened.extend(
            d.tick(&store, Timestamp(T0 + (w + 1) * MIN + d.grace_us))
                .unwrap(),
        );
    }
    assert_eq!(opened.len(), 1, "{opened:?}");
    assert_eq!(
        (opened[0].port, opened[0].severity.as_str()),
        (8443, "new-port")
    );
    assert_eq!(opened[0].start, Timestamp(T0 + 90 * MIN));
}

/// A campaign from one network: with an ASN table, tcp/23's sources from
/// AS 64999 (the only AS in DE) go from ~5 to ~45 a window while the port's
/// total moves by a tenth. The port-wide series stays quiet; the AS and
/// country series alert within two windows. Without the table nothing does.
#[test]
fn a_campaign_from_one_network_alerts_on_its_as_and_country_series() {
    use darkscope_aggregator::enrich::AsnTable;
    use std::sync::Arc;
    let table = Arc::new(AsnTable::parse(common::campaign_tsv().as_bytes()).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("a.db")).unwrap();
    common::one_network_campaign(&store);
    assert!(
        common::detect_all(&store, None).is_empty(),
        "the port's total barely moves"
    );
    common::assert_campaign_alerts(&common::detect_all(&store, Some(table)));
    // Stored with their group, served by the store as the API serves them.
    let stored = store.alerts(Timestamp(T0), None).unwrap();
    let mut got: Vec<String> = stored.iter().map(|a| a.group.clone()).collect();
    got.sort();
    assert_eq!(got, ["asn:64999", "country:DE"]);
    assert!(stored.iter().all(|a| a.scope == "local"));
}
