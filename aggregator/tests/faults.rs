//! Fault injection on the sensor → aggregator path: the first aggregator in
//! the sensor's list misbehaves (hangs after reading the request, closes the
//! connection in the middle of the body, or answers 500); the sensor times
//! out or fails, fails over to a healthy aggregator, and every window is
//! stored exactly once with the capture's exact totals.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Read the request, then never answer (and keep the connection open).
    Hang,
    /// Read the headers and part of the body, then close the connection.
    CloseMidBody,
    /// Read the request, answer 500.
    ServerError,
}

/// A misbehaving aggregator on loopback; returns its URL and a count of
/// the requests it mistreated.
fn hostile(fault: Fault) -> (String, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { return };
            counter.fetch_add(1, Ordering::Relaxed);
            std::thread::spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                let mut got = 0;
                // Headers plus at least a little of the body.
                while got < 300 {
                    match c.read(&mut buf[got..]) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got += n,
                    }
                }
                match fault {
                    Fault::Hang => std::thread::sleep(Duration::from_secs(120)),
                    Fault::CloseMidBody => {
                        let _ = c.shutdown(std::net::Shutdown::Both);
                    }
                    Fault::ServerError => {
                        let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
                        while matches!(c.read(&mut buf), Ok(n) if n > 0) {}
                        let _ = c.write_all(
                            b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        );
                    }
                }
            });
        }
    });
    (url, hits)
}

#[test]
fn a_misbehaving_aggregator_costs_time_not_data() {
    let truth = truth("all-small");
    for fault in [Fault::Hang, Fault::CloseMidBody, Fault::ServerError] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut agg = Aggregator::new(d);
        agg.add_sensor(d, "s-1");
        agg.start();
        let (bad, hits) = hostile(fault);
        let cfg = d.join("sensor.toml");
        std::fs::write(&cfg, "[upload]\ntimeout_secs = 2\n").unwrap();
        // The hostile one first in the list.
        let mut cmd = sensor_cmd_to(
            &format!("{bad},{}", agg.url()),
            d,
            "s-1",
            "all-small.pcap",
            60,
        );
        cmd.arg("--config").arg(&cfg);
        let t0 = std::time::Instant::now();
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{fault:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(t0.elapsed() < Duration::from_secs(60), "{fault:?}");
        assert!(
            hits.load(Ordering::Relaxed) >= 1,
            "{fault:?}: the fault was met"
        );
        let (packets, windows) = stored_packets_and_windows(&agg);
        assert_eq!(
            packets,
            truth["packets_darknet"].as_u64().unwrap(),
            "{fault:?}: every darknet packet stored once"
        );
        assert_eq!(windows, lines(&d.join("s-1.jsonl")), "{fault:?}");
        // Nothing left behind in the spool, nothing rejected.
        let spooled = |dir: &std::path::Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|r| {
                    r.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.ends_with(".zst"))
                        .collect()
                })
                .unwrap_or_default()
        };
        assert_eq!(
            spooled(&d.join("spool-s-1")),
            Vec::<String>::new(),
            "{fault:?}"
        );
        assert_eq!(
            spooled(&d.join("spool-s-1/rejected")),
            Vec::<String>::new(),
            "{fault:?}"
        );
    }
}

/// The spool disk wiped under a running sensor, and a sensor restarted on
/// an empty (missing) spool: the spool is made again, new windows flow,
/// and everything the aggregator acknowledged is there exactly once.
#[test]
fn a_sensor_recovers_from_a_wiped_or_empty_spool() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut agg = Aggregator::new(d);
    agg.add_sensor(d, "s-1");
    agg.start();
    let spool = d.join("spool-s-1");
    let log = d.join("sensor.log");
    let cmd = sensor_cmd(&agg, d, "s-1", "all-small.pcap", 60);
    let (mut sensor, mut stdin, rest) = sensor_on_stdin(&cmd, &[], "all-small.pcap", &log);
    // The first windows acknowledged, then the spool directory vanishes.
    let t0 = std::time::Instant::now();
    while stored_packets_and_windows(&agg).1 < 1 {
        assert!(t0.elapsed() < Duration::from_secs(30), "no window arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::remove_dir_all(&spool).unwrap();
    stdin.write_all(&rest).unwrap();
    drop(stdin);
    assert!(
        sensor.wait().unwrap().success(),
        "{}",
        std::fs::read_to_string(&log).unwrap()
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("is gone: making it again"));
    let all = truth("all-small")["packets_darknet"].as_u64().unwrap();
    let produced = lines(&d.join("s-1.jsonl"));
    assert_eq!(stored_packets_and_windows(&agg), (all, produced));

    // Restarted with no spool at all: it starts clean and its new windows
    // (7-second ones here, so they are not the ones already stored) arrive.
    std::fs::remove_dir_all(&spool).unwrap();
    assert!(sensor_cmd(&agg, d, "s-1", "rst.pcap", 7)
        .status()
        .unwrap()
        .success());
    let rst = truth("rst")["packets_darknet"].as_u64().unwrap();
    assert_eq!(
        stored_packets_and_windows(&agg),
        (all + rst, produced + lines(&d.join("s-1.jsonl")))
    );
}
