//! A full disk on either side of the upload path. The sensor's spool on a
//! full file system: capture goes on, summaries wait in memory and reach
//! the aggregator once space is back. The aggregator's database on a full
//! file system: uploads are refused with a storage error, the sensor keeps
//! retrying, nothing stored before is lost, and everything arrives once
//! space is back. Each disk is a small tmpfs the test mounts, so these tests
//! need root; elsewhere they print why they skipped.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A tmpfs of a fixed size mounted for the test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts one at `dir`; `None` (with the reason printed) when this
    /// process may not mount.
    fn mount(dir: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .stderr(Stdio::null())
            .status();
        match st {
            Ok(s) if s.success() => Some(Tmpfs(dir.to_path_buf())),
            _ => {
                eprintln!("SKIPPED: mounting a tmpfs needs root");
                None
            }
        }
    }

    /// Fills every free byte with a file; returns it (delete it to free the space).
    fn fill(&self) -> PathBuf {
        let p = self.0.join("filler");
        let mut f = std::fs::File::create(&p).unwrap();
        let block = vec![0u8; 4096];
        loop {
            if f.write_all(&block).and_then(|_| f.flush()).is_err() {
                break;
            }
        }
        // Smaller pieces too, to the last byte.
        while f.write_all(&[0u8; 64]).is_ok() {}
        p
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Waits up to `secs` for `cond`.
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(secs),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_full_spool_disk_delays_summaries_but_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("spoolfs"), "1m") else {
        return;
    };
    let mut agg = Aggregator::new(dir.path());
    agg.add_sensor(dir.path(), "s-1");
    agg.start();
    let spool = fs.0.join("spool");
    std::fs::create_dir_all(&spool).unwrap();
    let filler = fs.fill();

    // The capture arrives on standard input: its first part while the
    // spool's disk is full, the rest after space is back.
    let log = dir.path().join("sensor.log");
    let cmd = sensor_cmd(&agg, dir.path(), "s-1", "all-small.pcap", 60);
    let (mut sensor, mut stdin, rest) = sensor_on_stdin(
        &cmd,
        &[("--spool", spool.as_os_str())],
        "all-small.pcap",
        &log,
    );
    wait_for(30, "the sensor to find its spool unwritable", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("cannot write to the spool")
    });
    // Still capturing: nothing has reached the aggregator yet.
    assert!(sensor.try_wait().unwrap().is_none(), "the sensor gave up");
    assert_eq!(stored_packets_and_windows(&agg), (0, 0));

    std::fs::remove_file(&filler).unwrap();
    stdin.write_all(&rest).unwrap();
    drop(stdin);
    assert!(sensor.wait().unwrap().success());
    let produced = lines(&dir.path().join("s-1.jsonl"));
    assert!(produced >= 3);
    assert_eq!(
        stored_packets_and_windows(&agg),
        (
            truth("all-small")["packets_darknet"].as_u64().unwrap(),
            produced
        )
    );
    assert!(std::fs::read_to_string(&log)
        .unwrap()
        .contains("writable again"));
}

#[test]
fn a_full_database_disk_refuses_uploads_until_space_is_back_and_keeps_what_it_had() {
    let dir = tempfile::tempdir().unwrap();
    let Some(fs) = Tmpfs::mount(&dir.path().join("dbfs"), "16m") else {
        return;
    };
    let mut agg = Aggregator::new(dir.path());
    agg.db = fs.0.join("darkscope.db");
    agg.add_sensor(dir.path(), "s-masscan");
    agg.add_sensor(dir.path(), "s-nmap");
    let log = dir.path().join("aggregator.log");
    agg.start_logging(&log, "warn");
    // Accepted before the disk fills.
    assert!(
        sensor_cmd(&agg, dir.path(), "s-masscan", "masscan.pcap", 60)
            .status()
            .unwrap()
            .success()
    );
    let before = stored_packets_and_windows(&agg);
    let masscan = truth("masscan")["packets_darknet"].as_u64().unwrap();
    assert_eq!(before.0, masscan);

    let filler = fs.fill();
    let mut sensor = sensor_cmd(&agg, dir.path(), "s-nmap", "nmap.pcap", 60)
        .spawn()
        .unwrap();
    wait_for(60, "the aggregator to report a full disk", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("storage: the disk is full")
    });
    // Refused, not lost: the windows wait in the sensor's spool; the
    // aggregator still answers, with what it had.
    std::thread::sleep(Duration::from_secs(2));
    assert!(sensor.try_wait().unwrap().is_none());
    assert!(std::fs::read_dir(dir.path().join("spool-s-nmap"))
        .unwrap()
        .any(|e| e.unwrap().path().extension().is_some_and(|x| x == "zst")));
    assert_eq!(stored_packets_and_windows(&agg), before);

    std::fs::remove_file(&filler).unwrap();
    assert!(sensor.wait().unwrap().success());
    let nmap = truth("nmap")["packets_darknet"].as_u64().unwrap();
    let produced = lines(&dir.path().join("s-nmap.jsonl"));
    assert_eq!(
        stored_packets_and_windows(&agg),
        (masscan + nmap, before.1 + produced)
    );
    // Nothing was turned away for good.
    assert!(std::fs::read_dir(dir.path().join("spool-s-nmap/rejected"))
        .unwrap()
        .next()
        .is_none());
}
