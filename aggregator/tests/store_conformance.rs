//! One conformance suite for every `Store` backend: what the API relies on,
//! checked against the trait, on SQLite and on a real ClickHouse server;
//! and both backends must answer identically on the same data.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{summary, MIN, T0};

use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::{
    FeedCursor, FeedMatch, Inserted, PortFilter, Scope, Store, StoreError, SubscriberRecord,
};
use darkscope_common::{Addr, Fingerprint, FingerprintSet, Proto, Timestamp};

/// `source_rollups`: the backend also rolls up source rows by hour and keeps
/// them longer than raw rows (SQLite); ClickHouse answers a source's history
/// from its raw rows. Both roll up port rows.
fn conformance(store: &dyn Store, source_rollups: bool) {
    // Sensors.
    store.add_sensor("a", "JP", b"hash-a").unwrap();
    store.add_sensor("b", "DE", b"hash-b").unwrap();
    assert!(matches!(
        store.add_sensor("a", "JP", b"other"),
        Err(StoreError::SensorExists(_))
    ));
    assert_eq!(store.sensor_by_token(b"hash-b").unwrap().unwrap().id, "b");
    assert!(store.sensor_by_token(b"nope").unwrap().is_none());
    assert!(matches!(
        store.revoke_sensor("zz"),
        Err(StoreError::NoSensor(_))
    ));

    // Analysts.
    store.add_analyst("alice", b"hash-alice").unwrap();
    assert!(matches!(
        store.add_analyst("alice", b"x"),
        Err(StoreError::AnalystExists(_))
    ));
    assert_eq!(
        store.analyst_by_token(b"hash-alice").unwrap().unwrap().name,
        "alice"
    );
    assert!(
        store.analyst_by_token(b"hash-a").unwrap().is_none(),
        "sensor tokens are not analyst tokens"
    );
    store.revoke_analyst("alice").unwrap();
    assert!(store.analysts().unwrap()[0].revoked.is_some());
    assert!(matches!(
        store.revoke_analyst("bob"),
        Err(StoreError::NoAnalyst(_))
    ));

    // Idempotent inserts.
    assert_eq!(
        store
            .insert_summary(&summary("a", 0, &[1, 2, 7], 2), "JP")
            .unwrap(),
        Inserted::New
    );
    assert_eq!(
        store
            .insert_summary(&summary("a", 0, &[1, 2, 7], 2), "JP")
            .unwrap(),
        Inserted::Duplicate
    );
    assert_eq!(
        store
            .insert_summary(&summary("a", 1, &[2, 3], 1), "JP")
            .unwrap(),
        Inserted::New
    );
    assert_eq!(
        store
            .insert_summary(&summary("b", 0, &[3, 4], 5), "DE")
            .unwrap(),
        Inserted::New
    );

    // Top ports merge distinct sources across sensors and windows (1,2,3,4,7).
    let all = PortFilter {
        from: Timestamp(T0),
        to: Timestamp(T0 + 10 * MIN),
        ..Default::default()
    };
    let top = store.top_ports(&all, 10).unwrap();
    assert_eq!(top.len(), 1);
    assert_eq!((top[0].packets, top[0].sources), (6 + 2 + 10, 5));
    assert!((top[0].share - 1.0).abs() < 1e-9);
    let de = PortFilter {
        country: Some("DE".into()),
        ..all.clone()
    };
    assert_eq!(store.top_ports(&de, 10).unwrap()[0].packets, 10);
    let only_a = PortFilter {
        sensor: Some("a".into()),
        ..all.clone()
    };
    assert_eq!(store.top_ports(&only_a, 10).unwrap()[0].sources, 4);
    let udp = PortFilter {
        proto: Some(Proto::Udp),
        ..all.clone()
    };
    assert!(store.top_ports(&udp, 10).unwrap().is_empty());

    // Series: one point per minute, sources merged across sensors in a step.
    let s = store
        .port_series(
            Proto::Tcp,
            23,
            Timestamp(T0),
            Timestamp(T0 + 3 * MIN),
            MIN,
            Scope::Local,
        )
        .unwrap();
    let got: Vec<(u64, u64)> = s.iter().map(|p| (p.packets, p.sources)).collect();
    assert_eq!(got, vec![(16, 5), (2, 2), (0, 0)]);

    // A source.
    let src = store.source(Addr::v4(2), Scope::Local).unwrap().unwrap();
    assert_eq!((src.packets, src.windows), (3, 2));
    assert_eq!(src.ports[0].port, 23);
    assert_eq!(src.per_day.len(), 1);
    assert_eq!(
        store
            .source(Addr::v4(7), Scope::Local)
            .unwrap()
            .unwrap()
            .fingerprints,
        FingerprintSet(Fingerprint::Mirai.bit())
    );
    assert!(store.source(Addr::v4(99), Scope::Local).unwrap().is_none());

    // Sensor health.
    let st = store
        .sensor_status(Timestamp(T0 + 3 * MIN), Scope::Local)
        .unwrap();
    let a = st.iter().find(|s| s.id == "a").unwrap();
    assert_eq!(a.windows, 2);
    assert_eq!(a.dropped, 2);
    assert_eq!(a.last_window_end, Some(Timestamp(T0 + 2 * MIN)));
    assert_eq!(a.lag_seconds, Some(60.0));

    // Overview.
    let o = store
        .overview(Timestamp(T0), Timestamp(T0 + 10 * MIN), Scope::Local)
        .unwrap();
    assert_eq!((o.packets, o.active_sensors, o.windows), (18, 2, 3));
    assert_eq!(o.classes.tcp_syn, 18);
    assert_eq!(o.top_sources[0].ip, "0.0.0.3");

    // Alerts, whole-port and per group, open then resolved.
    let alert = |group: &str| darkscope_aggregator::store::Alert {
        id: 0,
        proto: Proto::Tcp,
        port: 23,
        scope: "local".into(),
        group: group.into(),
        start: Timestamp(T0 + MIN),
        severity: "high".into(),
        baseline: 1.5,
        observed: 40,
        state: "open".into(),
        resolved_at: None,
    };
    let id_all = store.insert_alert(&alert("")).unwrap();
    let id_as = store.insert_alert(&alert("asn:64999")).unwrap();
    assert_ne!(id_all, id_as);
    store.resolve_alert(id_as, Timestamp(T0 + 5 * MIN)).unwrap();
    let mut got: Vec<(String, String, String)> = store
        .alerts(Timestamp(T0), None)
        .unwrap()
        .into_iter()
        .map(|a| (a.scope, a.group, a.state))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("local".into(), "".into(), "open".into()),
            ("local".into(), "asn:64999".into(), "resolved".into())
        ]
    );
    assert_eq!(
        store.alerts(Timestamp(T0), Some("open")).unwrap()[0].group,
        ""
    );
    // By id: the stored alert as written, resolved state included.
    let one = store.alert(id_as).unwrap().expect("alert by id");
    assert_eq!(
        (one.id, one.group.as_str(), one.state.as_str()),
        (id_as, "asn:64999", "resolved")
    );
    assert_eq!(one.resolved_at, Some(Timestamp(T0 + 5 * MIN)));
    assert_eq!((one.proto, one.port, one.observed), (Proto::Tcp, 23, 40));
    assert!(store.alert(id_all.max(id_as) + 1000).unwrap().is_none());

    // Roll-ups: nothing before the hour (plus grace) is over; then the same
    // answers from the roll-up; a late window dirties its hour and is seen
    // at once, and again after the rebuild.
    let before = store.source(Addr::v4(2), Scope::Local).unwrap().unwrap();
    assert_eq!(store.rollup(Timestamp(T0 + 30 * MIN)).unwrap(), 0);
    assert_eq!(store.rollup(Timestamp(T0 + 66 * MIN)).unwrap(), 1);
    assert_eq!(
        store.source(Addr::v4(2), Scope::Local).unwrap().unwrap(),
        before
    );
    assert_eq!(
        store
            .insert_summary(&summary("b", 5, &[2], 4), "DE")
            .unwrap(),
        Inserted::New
    );
    let late = store.source(Addr::v4(2), Scope::Local).unwrap().unwrap();
    assert_eq!((late.packets, late.windows), (7, 3));
    assert_eq!(late.sensors, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(store.rollup(Timestamp(T0 + 67 * MIN)).unwrap(), 1);
    assert_eq!(
        store.source(Addr::v4(2), Scope::Local).unwrap().unwrap(),
        late
    );

    // Revocation is visible; retention deletes old windows only.
    store.revoke_sensor("a").unwrap();
    assert!(store
        .sensor_by_token(b"hash-a")
        .unwrap()
        .unwrap()
        .revoked
        .is_some());
    assert_eq!(
        store
            .apply_retention(Timestamp(T0 + MIN), Timestamp(0))
            .unwrap(),
        2
    );
    let o = store
        .overview(Timestamp(T0), Timestamp(T0 + 10 * MIN), Scope::Local)
        .unwrap();
    assert_eq!(o.windows, 2);
    // Raw rows of the first minute are gone; a roll-up still knows the hour.
    assert_eq!(
        store
            .source(Addr::v4(1), Scope::Local)
            .map(|s| s.map(|s| s.packets))
            .unwrap(),
        source_rollups.then_some(2)
    );
    store
        .apply_retention(Timestamp(T0 + MIN), Timestamp(T0 + 120 * MIN))
        .unwrap();
    assert!(store.source(Addr::v4(1), Scope::Local).unwrap().is_none());
}

/// Every port answer, over ranges that need raw, hourly and daily rows.
/// Leader election through the store's heartbeats: the oldest live replica
/// leads, the next takes over past the lease, and the old one leads again
/// when it comes back (`darkscope_aggregator::cluster`).
fn leader_election(store: &dyn Store) {
    use darkscope_aggregator::cluster::Leadership;
    use std::time::Duration;
    let a = Leadership::new(Duration::from_secs(1));
    std::thread::sleep(Duration::from_millis(2));
    let b = Leadership::new(Duration::from_secs(1));
    let t = Timestamp::now();
    assert!(b.tick(store, t).unwrap(), "b alone leads");
    assert!(a.tick(store, t).unwrap(), "a is older: a leads");
    assert!(!b.tick(store, t).unwrap(), "both see a as leader");
    assert_eq!(b.view().iter().filter(|r| r.leader).count(), 1);
    // a stops beating; past the lease b leads.
    let later = Timestamp(t.0 + 11_000_000);
    assert!(b.tick(store, later).unwrap());
    assert!(b.is_leader() && a.is_leader(), "a has not ticked since");
    // a comes back: it is still the oldest, so it leads again and b yields.
    assert!(a.tick(store, Timestamp(later.0 + 1)).unwrap());
    assert!(!b.tick(store, Timestamp(later.0 + 2)).unwrap());
}

fn port_answers(store: &dyn Store) -> String {
    let mut out = String::new();
    for scope in [Scope::Local, Scope::Global] {
        out += &port_answers_in(store, scope);
    }
    out
}

fn port_answers_in(store: &dyn Store, scope: Scope) -> String {
    let mut out = String::new();
    let h = 60 * MIN;
    for (a, b) in [
        (0, 50 * h),
        (7 * MIN, 49 * h + 3 * MIN),
        (24 * h, 48 * h),
        (h, 3 * h),
    ] {
        let f = PortFilter {
            from: Timestamp(T0 + a),
            to: Timestamp(T0 + b),
            scope,
            ..Default::default()
        };
        out += &format!("{:?}\n", store.top_ports(&f, 100).unwrap());
        let fb = PortFilter {
            sensor: Some("b".into()),
            ..f.clone()
        };
        out += &format!("{:?}\n", store.top_ports(&fb, 100).unwrap());
        let fc = PortFilter {
            country: Some("DE".into()),
            ..f
        };
        out += &format!("{:?}\n", store.top_ports(&fc, 100).unwrap());
        let reach = store
            .port_reach(Proto::Tcp, 23, Timestamp(T0 + a), Timestamp(T0 + b), scope)
            .unwrap();
        let mut who: Vec<(&str, &str)> = reach
            .sensors
            .iter()
            .map(|s| (s.sensor.as_str(), s.country.as_str()))
            .collect();
        who.sort();
        let mut want = vec![("a", "JP"), ("b", "DE")];
        if scope == Scope::Global {
            want.insert(0, ("@th/s-1", "TH"));
        }
        assert_eq!(who, want, "per sensor, never a pre-merged row");
        assert_eq!(
            reach.packets,
            reach.countries.iter().map(|c| c.packets).sum::<u64>()
        );
        out += &format!("{reach:?}\n");
    }
    for step in [20 * MIN, h, 24 * h] {
        let s = store
            .port_series(
                Proto::Tcp,
                23,
                Timestamp(T0),
                Timestamp(T0 + 50 * h),
                step,
                scope,
            )
            .unwrap();
        out += &format!("{s:?}\n");
        let t = store
            .total_series(Timestamp(T0), Timestamp(T0 + 50 * h), step, scope)
            .unwrap();
        out += &format!("{t:?}\n");
    }
    out
}

/// Two sensors, a window every 20 minutes for 50 hours, overlapping
/// sources, and a federation peer's sensor sharing some of them.
fn fill_fifty_hours(store: &dyn Store) {
    for w in (0..50 * 60).step_by(20) {
        let srcs: Vec<u32> = (0..(w % 7 + 1) as u32)
            .map(|i| i + (w as u32 / 60) % 5)
            .collect();
        store
            .insert_summary(&summary("a", w, &srcs, 1 + w % 3), "JP")
            .unwrap();
        if w % 40 == 0 {
            store
                .insert_summary(&summary("b", w, &[100, 101], 2), "DE")
                .unwrap();
        }
        if w % 60 == 0 {
            store
                .import_summary(&summary("@th/s-1", w, &[1, 2, 300], 4), "TH")
                .unwrap();
        }
    }
}

/// Fills `store` and a new SQLite store in `dir` with the same fifty hours,
/// rolls both up, and returns the SQLite store and `store`'s answers from
/// raw rows (taken before the roll-up).
fn fill_both(store: &dyn Store, dir: &std::path::Path) -> (SqliteStore, String) {
    let s = SqliteStore::open(&dir.join("same.db")).unwrap();
    fill_fifty_hours(&s);
    fill_fifty_hours(store);
    let raw = port_answers(store);
    s.rollup(Timestamp(T0 + 51 * 60 * MIN)).unwrap();
    store.rollup(Timestamp(T0 + 51 * 60 * MIN)).unwrap();
    (s, raw)
}

fn rollups_answer_like_raw_rows(store: &dyn Store) {
    fill_fifty_hours(store);
    let raw = port_answers(store);
    assert_ne!(
        port_answers_in(store, Scope::Local),
        port_answers_in(store, Scope::Global)
    );
    assert!(store.rollup(Timestamp(T0 + 51 * 60 * MIN)).unwrap() >= 50);
    assert_eq!(
        port_answers(store),
        raw,
        "roll-ups answer exactly like raw rows"
    );
    // A late window lands in an hour (and day) already rolled up.
    store
        .insert_summary(&summary("b", 61, &[7, 200, 201], 9), "DE")
        .unwrap();
    let late = port_answers(store);
    assert_ne!(late, raw);
    assert_eq!(store.rollup(Timestamp(T0 + 52 * 60 * MIN)).unwrap(), 1);
    assert_eq!(
        port_answers(store),
        late,
        "a rebuilt hour answers like raw rows"
    );
}

/// What federation needs from a backend: an arrival log of local windows,
/// windows read back as summaries, replacing imports, and scoped answers.
fn federation_storage(store: &dyn Store) {
    let mut a0 = summary("a", 0, &[1, 2, 7], 2);
    // Per-fingerprint source counts, each kept in its own place.
    a0.fingerprints = darkscope_common::wire::FingerprintCounts([1, 0, 2, 3]);
    store.insert_summary(&a0, "JP").unwrap();
    store
        .insert_summary(&summary("a", 1, &[2, 3], 1), "JP")
        .unwrap();
    store.insert_summary(&a0, "JP").unwrap(); // a retry: not logged again
    let log = store.local_changes(0, 10).unwrap();
    assert_eq!(log.len(), 2);
    assert!(log[0].seq < log[1].seq);
    assert_eq!((log[0].sensor.as_str(), log[0].start), ("a", Timestamp(T0)));
    assert_eq!(store.local_changes(log[0].seq, 10).unwrap().len(), 1);
    assert_eq!(store.local_changes_head().unwrap(), log[1].seq);

    // Read back: what was stored, minus capture health.
    let back = store
        .stored_summaries("a", Timestamp(T0), Timestamp(T0 + 1))
        .unwrap();
    assert_eq!(back.len(), 1);
    let b = &back[0];
    assert_eq!(
        (b.window, &b.classes, &b.fingerprints, &b.totals),
        (a0.window, &a0.classes, &a0.fingerprints, &a0.totals)
    );
    assert_eq!(b.ports, a0.ports);
    let mut want = a0.sources.clone();
    want.sort_by(|x, y| y.packets.cmp(&x.packets).then(x.ip.cmp(&y.ip)));
    assert_eq!(b.sources, want);
    assert_eq!(b.sensor.country, "JP");

    // Imports replace by key and never enter the export log.
    let peer = summary("@th/s-1", 0, &[2, 50], 3);
    assert_eq!(store.import_summary(&peer, "TH").unwrap(), Inserted::New);
    assert_eq!(
        store.import_summary(&peer, "TH").unwrap(),
        Inserted::Replaced
    );
    assert!(store
        .import_summary(&summary("a", 5, &[1], 1), "JP")
        .is_err());
    assert_eq!(store.local_changes(0, 10).unwrap().len(), 2);

    // Scopes: local sees our sensor only; global merges, counting source 2 once.
    let f = PortFilter {
        from: Timestamp(T0),
        to: Timestamp(T0 + MIN),
        ..Default::default()
    };
    let local = store.top_ports(&f, 10).unwrap();
    let global = store
        .top_ports(
            &PortFilter {
                scope: Scope::Global,
                ..f.clone()
            },
            10,
        )
        .unwrap();
    assert_eq!((local[0].packets, local[0].sources), (6, 3));
    assert_eq!((global[0].packets, global[0].sources), (12, 4));
    assert!(store.source(Addr::v4(50), Scope::Local).unwrap().is_none());
    assert_eq!(
        store
            .source(Addr::v4(50), Scope::Global)
            .unwrap()
            .unwrap()
            .sensors,
        vec!["@th/s-1".to_string()]
    );
    let o = store
        .overview(Timestamp(T0), Timestamp(T0 + MIN), Scope::Global)
        .unwrap();
    assert_eq!((o.packets, o.active_sensors), (12, 2));
    assert_eq!(
        store.window_sensors(Timestamp(T0), Scope::Local).unwrap(),
        1
    );
    assert_eq!(
        store.window_sensors(Timestamp(T0), Scope::Global).unwrap(),
        2
    );
    let n = |scope| store.port_sources_at(Timestamp(T0), scope).unwrap()[0].2;
    assert_eq!((n(Scope::Local), n(Scope::Global)), (3, 4));
    assert!(store
        .sensor_status(Timestamp::now(), Scope::Local)
        .unwrap()
        .iter()
        .all(|s| !s.id.starts_with('@')));
    let all = store
        .sensor_status(Timestamp::now(), Scope::Global)
        .unwrap();
    let last = all.last().unwrap();
    assert_eq!(
        (last.id.as_str(), last.country.as_str(), last.windows),
        ("@th/s-1", "TH", 1)
    );
    assert_eq!(all.len(), store.sensors().unwrap().len() + 1);

    // Peer sync state and the export audit log.
    use darkscope_aggregator::store::{ExportRecord, PeerState};
    let st = PeerState {
        peer: "th".into(),
        cursor: 42,
        last_error: "boom".into(),
        errors: 1,
        tlp: "amber".into(),
        ..Default::default()
    };
    store.save_peer_state(&st).unwrap();
    store
        .save_peer_state(&PeerState {
            cursor: 43,
            ..st.clone()
        })
        .unwrap();
    assert_eq!(
        store.peer_states().unwrap(),
        vec![PeerState { cursor: 43, ..st }]
    );
    let e = ExportRecord {
        time: Timestamp(T0),
        peer: "my".into(),
        share: "aggregates".into(),
        tlp: "green".into(),
        cursor_from: 0,
        cursor_to: 2,
        observations: 2,
        port_rows: 2,
        source_rows: 0,
    };
    store.record_export(&e).unwrap();
    store
        .record_export(&ExportRecord {
            peer: "th".into(),
            ..e.clone()
        })
        .unwrap();
    assert_eq!(store.exports(Timestamp(0), Some("my")).unwrap(), vec![e]);
    assert_eq!(store.exports(Timestamp(0), None).unwrap().len(), 2);
    assert!(store.exports(Timestamp(T0 + 1), None).unwrap().is_empty());
}

/// Feed storage: subscribers with prefixes, ASNs and webhooks; feed events
/// recorded with their window (once, even when the window is retried);
/// the day listing; the change stream and its cursor. `settle`: how long a
/// backend holds back fresh changes (ClickHouse, see `feed_changes`).
fn feed_storage(store: &dyn Store, settle: std::time::Duration) {
    let mut x = SubscriberRecord {
        id: "x".into(),
        prefixes: vec!["0.0.0.0/29".into()],
        asns: vec![64500],
        webhook: Some("http://127.0.0.1:9/hook".into()),
        webhook_key: vec![1, 2, 255],
        ..Default::default()
    };
    store.add_subscriber(&x, b"hash-x").unwrap();
    let y = SubscriberRecord {
        id: "y".into(),
        prefixes: vec!["0.0.0.7/32".into()],
        ..Default::default()
    };
    store.add_subscriber(&y, b"hash-y").unwrap();
    assert!(matches!(
        store.add_subscriber(&y, b"other"),
        Err(StoreError::SubscriberExists(_))
    ));
    let got = store.subscriber_by_token(b"hash-x").unwrap().unwrap();
    assert_eq!(
        (&got.prefixes, &got.asns, &got.webhook, &got.webhook_key),
        (&x.prefixes, &x.asns, &x.webhook, &x.webhook_key)
    );
    x.prefixes.push("2001:db8::/32".into());
    x.webhook = None;
    store.update_subscriber(&x).unwrap();
    let got = store.subscriber_by_token(b"hash-x").unwrap().unwrap();
    assert_eq!((got.prefixes.len(), got.webhook), (2, None));
    assert_eq!(got.webhook_key, vec![1, 2, 255]);
    assert!(matches!(
        store.update_subscriber(&SubscriberRecord {
            id: "zz".into(),
            ..Default::default()
        }),
        Err(StoreError::NoSubscriber(_))
    ));
    store.add_sensor("a", "JP", b"ha").unwrap();
    store.add_sensor("b", "DE", b"hb").unwrap();

    let m = |sub: &str, source: usize| FeedMatch {
        subscriber: sub.into(),
        source,
        asn: 64500,
        geo: "NL".into(),
    };
    // Sources 1, 2 and 7: 1 and 2 are x's, 7 is y's.
    let s0 = summary("a", 0, &[1, 2, 7], 3);
    let all = [m("x", 0), m("x", 1), m("y", 2)];
    assert_eq!(
        store.insert_summary_with(&s0, "JP", &all).unwrap(),
        Inserted::New
    );
    // A retry is stored once, events included.
    assert_eq!(
        store.insert_summary_with(&s0, "JP", &all).unwrap(),
        Inserted::Duplicate
    );
    std::thread::sleep(settle);
    let day = Timestamp(T0 - T0 % 86_400_000_000);
    let rows = store.feed_day("x", day).unwrap();
    assert_eq!(rows.len(), 2);
    let r = rows.iter().find(|r| r.ip == Addr::v4(1)).unwrap();
    assert_eq!(
        (
            r.sensor.as_str(),
            r.country.as_str(),
            r.asn,
            r.geo.as_str(),
            r.packets
        ),
        ("a", "JP", 64500, "NL", 3)
    );
    assert_eq!(r.ports.len(), 1);
    assert_eq!(store.feed_day("y", day).unwrap().len(), 1);
    assert_eq!(
        store.feed_day("y", day).unwrap()[0].fingerprints,
        FingerprintSet(Fingerprint::Mirai.bit())
    );
    assert!(store
        .feed_day("x", Timestamp(day.0 + 86_400_000_000))
        .unwrap()
        .is_empty());

    // The change stream: both of x's hosts, once each, then nothing.
    let start = FeedCursor::default();
    let c = store.feed_changes("x", &start, 10).unwrap();
    assert_eq!(c.len(), 2);
    assert!(c[0].0 < c[1].0);
    assert_eq!(c[0].1.len(), 1);
    let first = store.feed_changes("x", &start, 1).unwrap();
    assert_eq!(first.len(), 1);
    let rest = store.feed_changes("x", &first[0].0, 10).unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].0, c[1].0);
    assert!(store.feed_changes("x", &c[1].0, 10).unwrap().is_empty());
    // "Updated after t" is strict.
    let t = Timestamp(c[1].0.stored_at);
    assert!(store
        .feed_changes("x", &darkscope_aggregator::feeds::cursor_after(t), 10)
        .unwrap()
        .is_empty());
    let before = Timestamp(c[0].0.stored_at - 1);
    assert_eq!(
        store
            .feed_changes("x", &darkscope_aggregator::feeds::cursor_after(before), 10)
            .unwrap()
            .len(),
        2
    );

    // Sensor b sees host 1 later: it comes back, with both rows.
    std::thread::sleep(std::time::Duration::from_millis(5));
    let s1 = summary("b", 1, &[1], 4);
    store.insert_summary_with(&s1, "DE", &[m("x", 0)]).unwrap();
    std::thread::sleep(settle);
    let again = store.feed_changes("x", &c[1].0, 10).unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].0.ip, "0.0.0.1");
    let mut sensors: Vec<_> = again[0].1.iter().map(|r| r.sensor.clone()).collect();
    sensors.sort();
    assert_eq!(sensors, ["a", "b"]);
    assert_eq!(store.feed_day("x", day).unwrap().len(), 3);
    // Which feeds carried a host: x's twice (sensors a and b), y's not.
    let hf = store.host_feeds(Addr::v4(1)).unwrap();
    assert_eq!(hf.len(), 1);
    assert_eq!(
        (hf[0].subscriber.as_str(), hf[0].first_day, hf[0].last_day),
        ("x", day, day)
    );
    assert_eq!((hf[0].days, hf[0].packets), (1, 3 + 4));
    assert_eq!(store.host_feeds(Addr::v4(7)).unwrap()[0].subscriber, "y");
    assert!(store.host_feeds(Addr::v4(99)).unwrap().is_empty());

    // Webhook digest positions.
    assert_eq!(store.push_cursor("x").unwrap(), None);
    store.save_push_cursor("x", &c[0].0).unwrap();
    store.save_push_cursor("x", &again[0].0).unwrap();
    assert_eq!(store.push_cursor("x").unwrap(), Some(again[0].0.clone()));
    assert_eq!(store.push_cursor("y").unwrap(), None);

    // Feed events live as long as roll-ups.
    store
        .apply_retention(Timestamp(T0), Timestamp(day.0 + 86_400_000_000))
        .unwrap();
    assert!(store.feed_day("x", day).unwrap().is_empty());
}

#[test]
fn sqlite_feed_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("feed.db")).unwrap();
    feed_storage(&store, std::time::Duration::ZERO);
}

#[test]
fn sqlite_federation_storage_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("f.db")).unwrap();
    federation_storage(&store);
}

#[test]
fn sqlite_rollups_answer_like_raw_rows() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("r.db")).unwrap();
    rollups_answer_like_raw_rows(&store);
}

#[test]
fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("c.db")).unwrap();
    conformance(&store, true);
    leader_election(&SqliteStore::open(&dir.path().join("l.db")).unwrap());
}

/// Two processes on one database file (an aggregator and `darkscope-admin`,
/// or a test filling history) write at the same time: every write lands,
/// none fails with "database is locked".
#[test]
fn sqlite_writers_on_one_file_wait_for_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.db");
    SqliteStore::open(&path).unwrap();
    let writers: Vec<_> = (0..3)
        .map(|k| {
            let path = path.clone();
            std::thread::spawn(move || {
                let s = SqliteStore::open(&path).unwrap();
                let sensor = format!("s{k}");
                for w in 0..150 {
                    let srcs: Vec<u32> = (0..20).map(|i| i * 3 + w as u32).collect();
                    assert_eq!(
                        s.insert_summary(&summary(&sensor, w, &srcs, 1), "JP")
                            .unwrap_or_else(|e| panic!("{sensor} window {w}: {e}")),
                        Inserted::New
                    );
                }
            })
        })
        .collect();
    for t in writers {
        t.join().unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    for k in 0..3 {
        assert_eq!(
            s.insert_summary(&summary(&format!("s{k}"), 149, &[1], 1), "JP")
                .unwrap(),
            Inserted::Duplicate
        );
    }
}

#[test]
fn sqlite_data_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("r.db");
    {
        let s = SqliteStore::open(&path).unwrap();
        s.add_sensor("a", "JP", b"h").unwrap();
        s.insert_summary(&summary("a", 0, &[1], 1), "JP").unwrap();
    }
    let s = SqliteStore::open(&path).unwrap();
    assert_eq!(
        s.insert_summary(&summary("a", 0, &[1], 1), "JP").unwrap(),
        Inserted::Duplicate
    );
    assert_eq!(s.sensors().unwrap().len(), 1);
}

#[test]
fn clickhouse_store_conforms() {
    let ch = common::clickhouse::Server::start();
    let store = ch.store("conformance");
    conformance(&store, false);
    federation_storage(&ch.store("federation"));
    feed_storage(&ch.store("feeds"), std::time::Duration::from_millis(5500));
    leader_election(&ch.store("leader"));
    assert!(store.server_version().unwrap().len() >= 5);
}

#[test]
fn clickhouse_rollups_answer_like_raw_rows() {
    let ch = common::clickhouse::Server::start();
    rollups_answer_like_raw_rows(&ch.store("rollups"));
}

/// A migration cut short after some of its statements ran (the
/// aggregator stopped, a host went away) can be run again: an `ADD COLUMN`
/// whose column is already there counts as done (ClickHouse 18.16 has no
/// `ADD COLUMN IF NOT EXISTS`; every other statement says `IF [NOT] EXISTS`).
#[test]
fn clickhouse_migration_cut_short_runs_again() {
    use darkscope_aggregator::store::clickhouse::ClickHouseStore;
    let ch = common::clickhouse::Server::start();
    let cfg = ch.config("resume");
    assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![1, 2, 3, 4, 5]);
    let sql = |q: &str| common::clickhouse::query(&ch.url, q);
    // As if migrations 004 (two ADD COLUMNs, then new tables) and 005 (an
    // ADD COLUMN) had run but were never recorded.
    sql("DROP TABLE resume.schema_migrations");
    sql("CREATE TABLE resume.schema_migrations (version UInt32, applied UInt64) ENGINE = MergeTree ORDER BY version");
    sql("INSERT INTO resume.schema_migrations VALUES (1, 0), (2, 0), (3, 0)");
    assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![4, 5]);
    assert!(ClickHouseStore::migrate(&cfg).unwrap().is_empty());
    ClickHouseStore::open(&cfg).unwrap();
}

#[test]
fn clickhouse_refuses_a_database_that_was_not_migrated() {
    let ch = common::clickhouse::Server::start();
    let e = darkscope_aggregator::store::clickhouse::ClickHouseStore::open(&ch.config("fresh"))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("darkscope-aggregator migrate"), "{e}");
}

/// ClickHouse export positions come from replicas' clocks, so a window is
/// offered to federation peers only once it has settled: a peer's cursor
/// can then never pass a window that is still being committed elsewhere.
#[test]
fn clickhouse_offers_windows_to_peers_once_settled() {
    use darkscope_aggregator::store::clickhouse::ClickHouseStore;
    let ch = common::clickhouse::Server::start();
    let mut cfg = ch.config("settle");
    ClickHouseStore::migrate(&cfg).unwrap();
    cfg.export_settle_secs = 2;
    let store = ClickHouseStore::open(&cfg).unwrap();
    store.add_sensor("a", "JP", b"hash-a").unwrap();
    store
        .insert_summary(&summary("a", 0, &[1, 2], 1), "JP")
        .unwrap();
    assert!(
        store.local_changes(0, 10).unwrap().is_empty(),
        "not offered while it may still be overtaken"
    );
    std::thread::sleep(std::time::Duration::from_millis(2200));
    let log = store.local_changes(0, 10).unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!((log[0].sensor.as_str(), log[0].start), ("a", Timestamp(T0)));
}

/// The same data in both backends gives the same answers to every query
/// the API makes (SQLite from its roll-ups where it can, ClickHouse from
/// raw rows), in both scopes.
#[test]
fn backends_answer_identically() {
    let ch = common::clickhouse::Server::start();
    let c = ch.store("same");
    let dir = tempfile::tempdir().unwrap();
    let (s, raw) = fill_both(&c, dir.path());
    assert_eq!(port_answers(&s), port_answers(&c));
    assert_eq!(port_answers(&c), raw);
    for scope in [Scope::Local, Scope::Global] {
        for ip in [1, 2, 100, 300] {
            assert_eq!(
                s.source(Addr::v4(ip), scope).unwrap(),
                c.source(Addr::v4(ip), scope).unwrap(),
                "source {ip} {scope:?}"
            );
        }
        let (from, to) = (Timestamp(T0), Timestamp(T0 + 50 * 60 * MIN));
        assert_eq!(
            s.overview(from, to, scope).unwrap(),
            c.overview(from, to, scope).unwrap()
        );
        assert_eq!(
            s.window_starts(from, to, scope).unwrap(),
            c.window_starts(from, to, scope).unwrap()
        );
        let mut a = s.port_sources_at(Timestamp(T0 + 60 * MIN), scope).unwrap();
        let mut b = c.port_sources_at(Timestamp(T0 + 60 * MIN), scope).unwrap();
        a.sort();
        b.sort();
        assert_eq!(a, b);
    }
    assert_eq!(
        s.stored_summaries("a", Timestamp(T0), Timestamp(T0 + 60 * MIN))
            .unwrap(),
        c.stored_summaries("a", Timestamp(T0), Timestamp(T0 + 60 * MIN))
            .unwrap()
    );
}

/// The cluster schema (`deploy/clickhouse/cluster/`, applied by `migrate`
/// with `[clickhouse] cluster`) on a real cluster: ZooKeeper and four
/// servers, 2 shards × 2 replicas. The whole suite (and leader election
/// through heartbeats) passes through the distributed tables, a second aggregator on another node reads what the
/// first stored, answers equal SQLite's on the same data, retention deletes
/// on every shard, and with a replica killed the cluster still stores and
/// answers through the other.
#[test]
fn clickhouse_cluster_conforms() {
    use darkscope_aggregator::store::clickhouse::ClickHouseStore;
    let mut ch = common::clickhouse::Cluster::start();
    conformance(&ch.store(0, "conformance"), false);
    federation_storage(&ch.store(1, "federation"));
    feed_storage(
        &ch.store(3, "feeds"),
        std::time::Duration::from_millis(5500),
    );
    leader_election(&ch.store(1, "leader"));

    let c = ch.store(2, "same");
    let dir = tempfile::tempdir().unwrap();
    let (s, raw) = fill_both(&c, dir.path());
    assert_eq!(port_answers(&c), raw, "roll-ups answer like raw rows");
    assert_eq!(port_answers(&s), raw, "the cluster answers like SQLite");
    // Windows are spread over both shards, each copied to its second replica.
    let count = |u: &String| -> u64 {
        common::clickhouse::query(u, "SELECT count() FROM same.windows_local")
            .trim()
            .parse()
            .unwrap()
    };
    let t0 = std::time::Instant::now();
    let per_node = loop {
        let n: Vec<u64> = ch.urls.iter().map(count).collect();
        if (n[0] == n[1] && n[2] == n[3]) || t0.elapsed().as_secs() > 30 {
            break n;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(
        per_node[0] > 0 && per_node[2] > 0,
        "both shards hold windows: {per_node:?}"
    );
    assert_eq!(
        (per_node[0], per_node[2]),
        (per_node[1], per_node[3]),
        "replicas hold their shard's rows"
    );

    // Another aggregator, on another node, sees the same database.
    let other = ClickHouseStore::open(&ch.config(1, "same")).unwrap();
    assert_eq!(port_answers(&other), raw);

    // Retention by `by` up to `minute` deletes windows, and `reader` then
    // finds none before it.
    let retention_empties = |by: &ClickHouseStore, reader: &ClickHouseStore, minute: u64| {
        let cutoff = Timestamp(T0 + minute * MIN);
        assert!(by.apply_retention(cutoff, Timestamp(T0)).unwrap() > 0);
        assert!(reader
            .window_starts(Timestamp(T0), cutoff, Scope::Global)
            .unwrap()
            .is_empty());
    };
    // Retention reaches every shard and replica.
    retention_empties(&c, &other, 25 * 60);

    // A replica of each shard dies: the others take inserts and queries.
    ch.kill9(0);
    ch.kill9(2);
    let survivor = ClickHouseStore::open(&ch.config(1, "same")).unwrap();
    let late = summary("a", 50 * 60, &[7, 8, 9], 1);
    assert_eq!(survivor.insert_summary(&late, "JP").unwrap(), Inserted::New);
    let after = survivor
        .window_starts(Timestamp(T0), Timestamp(T0 + 51 * 60 * MIN), Scope::Local)
        .unwrap();
    assert!(after.contains(&Timestamp(T0 + 50 * 60 * MIN)), "{after:?}");

    // Retention with two nodes down: the cluster-wide ALTER cannot finish
    // on them (ClickHouse queues it for when they return), but the live
    // replicas delete, and retention does not fail (it used to, when the
    // client's timeout ran out first; a full test run here once failed so
    // with every node up, one slow to take the statement).
    let impatient =
        ClickHouseStore::open(&darkscope_aggregator::store::clickhouse::ClickHouseConfig {
            timeout_secs: 10,
            ..ch.config(1, "same")
        })
        .unwrap();
    retention_empties(&impatient, &survivor, 51 * 60);

    // A schema change with hosts down: ClickHouse stops waiting for them
    // (code 159) and queues the statement for when they return; migrate
    // waits a while longer, then fails naming exactly those hosts. (A full
    // test run here once failed in migrate with every host up, one being
    // slow: migrate now waits out such a host instead of failing at once.)
    let impatient = darkscope_aggregator::store::clickhouse::ClickHouseConfig {
        timeout_secs: 4,
        ..ch.config(1, "late")
    };
    let e = ClickHouseStore::migrate(&impatient)
        .unwrap_err()
        .to_string();
    assert!(e.contains("still not done on"), "{e}");
    for (i, port) in ch.tcp.iter().enumerate() {
        let named = e.contains(&format!("127.0.0.1:{port}"));
        assert_eq!(named, i == 0 || i == 2, "node {i} named: {e}");
    }
    // They come back and take what was queued; the migration, run again,
    // completes on every node.
    ch.restart(0);
    ch.restart(2);
    let cfg = ch.config(1, "late");
    assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![1, 2, 3, 4, 5]);
    let tables = |u: &String| {
        common::clickhouse::query(
            u,
            "SELECT count() FROM system.tables WHERE database = 'late'",
        )
    };
    let on_node1 = tables(&ch.urls[1]);
    assert_ne!(on_node1.trim(), "0");
    let t0 = std::time::Instant::now();
    while ch.urls.iter().any(|u| tables(u) != on_node1) && t0.elapsed().as_secs() < 60 {
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for u in &ch.urls {
        assert_eq!(tables(u), on_node1, "{u} has the whole schema");
    }
    ClickHouseStore::open(&ch.config(0, "late")).unwrap();
}
