//! Regression test of the surge detector on short (4-day) labelled scenarios:
//! 3x and 10x outbreaks are found within 5 windows, and background, floods
//! and a sensor outage raise no alarm. The full 14-day evaluation is
//! `darkscope-detect-eval` (results in benches/RESULTS.md).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

use darkscope_aggregator::detect::DetectConfig;
use darkscope_benches::scenarios::{all, evaluate};

#[test]
fn short_scenarios_keep_recall_delay_and_false_alarms() {
    let cfg = DetectConfig::default();
    for seed in [1u64, 2, 3] {
        for s in all(4, seed) {
            let o = evaluate(&s, &cfg);
            if s.name.ends_with("not excluded") {
                // Why research scanners are excluded at the sensor: a sweep
                // of every port raises alarms all over.
                assert!(o.false_alarms >= 10, "{} (seed {seed}): {o:?}", s.name);
                continue;
            }
            assert_eq!(o.false_alarms, 0, "{} (seed {seed}): false alarms", s.name);
            if s.name.starts_with("slow ramp") {
                let d = o
                    .delay
                    .unwrap_or_else(|| panic!("{} (seed {seed}) missed", s.name));
                assert!(d <= 480, "{} (seed {seed}): delay {d}", s.name);
            }
            if s.name.starts_with("outbreak 3x") || s.name.starts_with("outbreak 10x") {
                let d = o
                    .delay
                    .unwrap_or_else(|| panic!("{} (seed {seed}) missed", s.name));
                assert!(d <= 5, "{} (seed {seed}): delay {d}", s.name);
            }
        }
    }
}

/// Side by side with DShield's port trend score at the threshold where it
/// raises no false alarm on the scenarios without a surge: ours finds the
/// short outbreaks it misses, and the worm and the slow ramp earlier.
#[test]
fn ours_detects_earlier_than_dshield_at_no_false_alarms() {
    use darkscope_benches::scenarios::evaluate_dshield;
    let cfg = DetectConfig::default();
    let sets: Vec<_> = [1u64, 2].iter().map(|&seed| all(4, seed)).collect();
    let quiet = |theta: f64| {
        sets.iter()
            .flatten()
            .filter(|s| s.is_quiet())
            .all(|s| evaluate_dshield(s, theta).false_alarms == 0)
    };
    let mut theta = 1.0;
    while !quiet(theta) {
        theta *= 1.1;
    }
    for s in sets.iter().flatten() {
        if !(s.name.starts_with("outbreak")
            || s.name.starts_with("Mirai")
            || s.name.starts_with("slow ramp"))
        {
            continue;
        }
        let ours = evaluate(s, &cfg);
        let theirs = evaluate_dshield(s, theta);
        assert_eq!(ours.false_alarms, 0, "{}", s.name);
        let Some(d) = ours.delay else {
            panic!("{}: ours missed it", s.name)
        };
        if let Some(t) = theirs.delay {
            assert!(d < t, "{}: ours {d} vs DShield {t} windows", s.name);
        }
    }
}

/// The same scenarios through the aggregator's real path: per-sensor
/// summaries (sources split over three sensors, each with its own sketch)
/// stored in a SQLite file, the aggregator's detector loop reading merged
/// sketches and sensor counts back. It must find what the detector finds on
/// the scenario's own numbers, as early, and raise nothing where there is
/// no surge: a sensor going offline included.
#[test]
fn scenarios_through_a_real_store_match_the_detector_on_their_numbers() {
    use darkscope_benches::scenarios::evaluate_through_store;
    let cfg = DetectConfig::default();
    // tmpfs where there is one: the medium does not change what is stored,
    // and thousands of commits on a disk would only slow the test.
    let base = if std::path::Path::new("/dev/shm").is_dir() {
        std::path::PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = tempfile::Builder::new()
        .prefix("darkscope-detect-store")
        .tempdir_in(base)
        .unwrap();
    // A surge (found through merged sketches), a flood (packets are not
    // sources) and an outage (sensor counts from the store gate windows).
    let wanted = ["outbreak 3x", "single-source flood", "sensor offline"];
    for (i, s) in all(4, 7)
        .into_iter()
        .filter(|s| wanted.iter().any(|w| s.name.starts_with(w)))
        .enumerate()
    {
        let direct = evaluate(&s, &cfg);
        let stored =
            evaluate_through_store(&s, &cfg, &dir.path().join(format!("{i}.db")), 7).unwrap();
        assert_eq!(stored.false_alarms, 0, "{}: {stored:?}", s.name);
        match (direct.delay, stored.delay) {
            (None, None) => assert!(s.surge.is_none(), "{}: missed both ways", s.name),
            (Some(a), Some(b)) => {
                assert!(b <= 5, "{}: {b} windows through the store", s.name);
                assert!(a.abs_diff(b) <= 1, "{}: {a} direct vs {b} stored", s.name);
            }
            other => panic!("{}: direct vs stored {other:?}", s.name),
        }
    }
}

/// The whole chain on packets: a generated 3-hour capture (stationary
/// background of 20,000 heavy-tailed sources) with a labelled ZMap-like
/// campaign on tcp/8443 from minute 120 to 140 (about 3x the port's usual
/// distinct sources) goes through the sensor library (libpcap, decode,
/// classify, 1-minute windows), the SQLite store and the aggregator's
/// detector loop: one alert, on tcp/8443, within 2 windows of the onset,
/// carrying the campaign's sources as evidence; no alert anywhere else.
#[test]
fn a_campaign_in_a_packet_capture_alerts_through_sensor_store_and_detector() {
    use darkscope_aggregator::detect::Detector;
    use darkscope_aggregator::store::{sqlite::SqliteStore, Store};
    use darkscope_benches::gen::{generate, GenConfig, Surge, DARKNET};
    use darkscope_common::{Proto, Timestamp};
    let dir = tempfile::tempdir().unwrap();
    let pcap = dir.path().join("campaign.pcap");
    let gen = GenConfig {
        packets: 360_000,
        sources: 20_000,
        duration_secs: 3 * 3600,
        truth: false,
        surge: Some(Surge {
            port: 8443,
            from_secs: 120 * 60,
            to_secs: 140 * 60,
            share: 0.02,
            sources: 5_000,
        }),
        ..Default::default()
    };
    generate(&gen, &pcap).unwrap();
    let mut cfg = darkscope_sensor::config::Config::default();
    cfg.sensor.id = "s-1".into();
    cfg.sensor.darknet = DARKNET.split(',').map(String::from).collect();
    cfg.capture.read = Some(pcap);
    cfg.pipeline.window_secs = 60;
    let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    darkscope_sensor::run(
        &cfg.validate().unwrap(),
        Box::new(darkscope_sensor::export::Collect(out.clone())),
        Default::default(),
        Default::default(),
        None,
    )
    .unwrap();
    let mut windows = out.lock().unwrap().clone();
    windows.sort_by_key(|s| s.window.start);
    assert!(windows.len() >= 180, "{} windows", windows.len());
    let t0 = windows[0].window.start.0;
    let on_port = |w: &darkscope_common::Summary| {
        w.ports
            .iter()
            .find(|p| p.proto == Proto::Tcp && p.port == 8443)
            .map_or(0, |p| p.sources)
    };
    let usual: u64 = windows[60..120].iter().map(on_port).sum::<u64>() / 60;
    let during: u64 = windows[120..140].iter().map(on_port).sum::<u64>() / 20;
    assert!(
        during >= 2 * usual && during <= 5 * usual,
        "a moderate rise: {usual} -> {during} sources a window"
    );

    let store = SqliteStore::open(&dir.path().join("d.db")).unwrap();
    let mut detector = Detector::new(DetectConfig::default());
    let mut alerts = Vec::new();
    for w in &windows {
        store.insert_summary(w, "JP").unwrap();
        // The server ticks once the window is over plus its grace.
        alerts.extend(
            detector
                .tick(&store, Timestamp(w.window.start.0 + 180_000_001))
                .unwrap(),
        );
    }
    let at = |a: &darkscope_aggregator::store::Alert| (a.start.0 - t0) / 60_000_000;
    let summary: Vec<_> = alerts.iter().map(|a| (a.proto, a.port, at(a))).collect();
    assert_eq!(
        alerts.len(),
        1,
        "one alert, and only on the campaign: {summary:?}"
    );
    let a = &alerts[0];
    assert_eq!((a.proto, a.port), (Proto::Tcp, 8443), "{summary:?}");
    assert!(
        (120..=122).contains(&at(a)),
        "onset 120, alert at {}",
        at(a)
    );
    assert!(a.observed >= 2 * usual, "{a:?}");
    // The evidence the API serves with it (the alert's window): most of the
    // port's sources there carry the campaign's ZMap fingerprint.
    let stored = store.alert(a.id).unwrap().expect("stored");
    let rows = store
        .sources_between(stored.start, Timestamp(stored.start.0 + 1))
        .unwrap();
    let ev = darkscope_aggregator::store::fold::port_sources(
        &rows,
        Proto::Tcp,
        8443,
        darkscope_aggregator::store::Scope::Local,
        10,
    );
    let zmap = ev
        .fingerprints
        .iter()
        .find(|f| f.fingerprint == "zmap")
        .unwrap();
    assert!(
        zmap.sources * 2 > ev.sources,
        "{} of {} sources are ZMap's",
        zmap.sources,
        ev.sources
    );
}
