//! The `darkscope-sensor` binary as an operator meets it: outputs, exit codes,
//! error messages, stdin input and the metrics endpoint.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::{testdata, DARKNET};
use darkscope_common::Summary;
use std::io::{Read, Write};
use std::process::{Command, Stdio};

fn sensor() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_darkscope-sensor"));
    c.env("RUST_LOG", "warn");
    c
}

fn summaries(text: &str) -> Vec<Summary> {
    text.lines()
        .map(|l| serde_json::from_str(l).expect("each line is a summary"))
        .collect()
}

#[test]
fn writes_one_summary_per_window_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("s.jsonl");
    let st = sensor()
        .args(["--read"])
        .arg(testdata("all-small.pcap"))
        .args([
            "--darknet",
            DARKNET,
            "--id",
            "jp-01",
            "--country",
            "JP",
            "--window",
            "60",
            "--out",
        ])
        .arg(&out)
        .status()
        .unwrap();
    assert!(st.success());
    let sums = summaries(&std::fs::read_to_string(&out).unwrap());
    assert!(sums.len() >= 2);
    assert_eq!(sums.iter().map(|s| s.totals.packets).sum::<u64>(), 30_346);
    assert!(sums
        .iter()
        .all(|s| s.sensor.id == "jp-01" && s.sensor.country == "JP"));
    assert_eq!(sums[0].schema, 1);
}

#[test]
fn reads_standard_input() {
    let bytes = std::fs::read(testdata("zmap.pcap")).unwrap();
    let mut child = sensor()
        .args(["--read", "-", "--darknet", DARKNET, "--window", "86400"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let sums = summaries(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(sums[0].totals.packets, 3000);
    assert_eq!(sums[0].fingerprints[darkscope_common::Fingerprint::Zmap], 1);
}

#[test]
fn truncated_capture_keeps_what_was_read_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let cut = dir.path().join("cut.pcap");
    let bytes = std::fs::read(testdata("masscan.pcap")).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).unwrap();
    let out = sensor()
        .arg("--read")
        .arg(&cut)
        .args(["--darknet", DARKNET, "--window", "86400"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exit 2 = input ended early");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ended early"), "{err}");
    let sums = summaries(&String::from_utf8(out.stdout).unwrap());
    let n = sums[0].totals.packets;
    assert!(n > 7000 && n < 16384, "about half the packets: {n}");
}

#[test]
fn bad_input_gets_a_clear_error_and_no_panic() {
    let capture = testdata("masscan.pcap");
    let capture = capture.to_str().unwrap();
    let cases: [(&[&str], &str); 7] = [
        (
            &["--read", "x.pcap", "--darknet", "198.19.0.0/33"],
            "darknet: '198.19.0.0/33': prefix length",
        ),
        (
            &[
                "--read",
                "x.pcap",
                "--darknet",
                "198.19.0.0/16",
                "--exclude",
                "198.18.0.0/40",
            ],
            "exclude: '198.18.0.0/40': prefix length",
        ),
        (
            &[
                "--read",
                capture,
                "--darknet",
                "198.19.0.0/16",
                "--out",
                "/nonexistent/dir/out.jsonl",
            ],
            "cannot write summaries to '/nonexistent/dir/out.jsonl'",
        ),
        (&["--read", "x.pcap"], "no darknet"),
        (
            &["--read", "/nonexistent.pcap", "--darknet", "198.19.0.0/16"],
            "cannot read capture",
        ),
        (&["--darknet", "198.19.0.0/16"], "no input"),
        (
            &[
                "--read",
                "x.pcap",
                "--darknet",
                "198.19.0.0/16",
                "--country",
                "Japan",
            ],
            "alpha-2",
        ),
    ];
    for (args, want) in cases {
        let out = sensor().args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: expected '{want}' in: {err}");
        assert!(!err.contains("panicked"), "{err}");
        // Said once: a cause is not repeated after the message that quotes it.
        let cause = err.trim_end().rsplit(": ").next().unwrap();
        assert_eq!(err.matches(cause).count(), 1, "{args:?}: {err}");
    }
    // Files libpcap refuses: exit code 1, no panic, the message.
    let dir = tempfile::tempdir().unwrap();
    let refused = |name: &str, bytes: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let out = sensor()
            .arg("--read")
            .arg(&path)
            .args(["--darknet", DARKNET])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(!err.contains("panicked"), "{err}");
        err
    };
    // Not a capture at all.
    let err = refused("junk.pcap", b"this is not a pcap file at all, just text\n");
    assert!(err.contains("cannot read capture"), "{err}");
    assert!(
        !err.contains("libpcap error"),
        "libpcap's prefix is dropped: {err}"
    );
    // A pcapng file whose interfaces have different link types (Ethernet,
    // then Linux cooked), which libpcap cannot read: said, with why.
    let mut png = Vec::new();
    // Section header: type, length, byte-order magic, version 1.0, unknown
    // section length, length again.
    for w in [0x0A0D_0D0Au32, 28, 0x1A2B_3C4D, 1, u32::MAX, u32::MAX, 28] {
        png.extend_from_slice(&w.to_le_bytes());
    }
    for link in [1u32, 113] {
        // Interface description: type 1, length 20, link type, snaplen.
        for w in [1u32, 20, link, 65535, 20] {
            png.extend_from_slice(&w.to_le_bytes());
        }
    }
    let err = refused("mixed.pcapng", &png);
    assert!(err.contains("share one link type"), "{err}");
    // A bad config file names the file and the key.
    let cfg = dir.path().join("s.toml");
    std::fs::write(&cfg, "[sensor]\ncountri = \"JP\"\n").unwrap();
    let out = sensor().arg("--config").arg(&cfg).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("s.toml") && err.contains("countri"), "{err}");
}

#[test]
fn live_interface_errors_are_explained() {
    let out = sensor()
        .args(["--interface", "no-such-if0", "--darknet", DARKNET])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no such interface 'no-such-if0'"), "{err}");
    let out = sensor()
        .args([
            "--interface",
            "lo",
            "--darknet",
            DARKNET,
            "--bpf",
            "tcp port banana",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    if err.contains("not permitted") {
        eprintln!("skipping BPF check: not allowed to open lo here");
    } else {
        assert!(err.contains("bad BPF filter"), "{err}");
    }
}

#[test]
fn metrics_endpoint_serves_counters_while_running() {
    // Feed stdin by hand so the sensor is still running while we scrape.
    let bytes = std::fs::read(testdata("all-small.pcap")).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let mut child = sensor()
        .args([
            "--read",
            "-",
            "--darknet",
            DARKNET,
            "--window",
            "1",
            "--metrics-listen",
            &addr,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes).unwrap();
    stdin.flush().unwrap();
    let mut body = String::new();
    for _ in 0..100 {
        std::thread::sleep(std::time::Duration::from_millis(50));
        if let Ok(mut s) = std::net::TcpStream::connect(&addr) {
            s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
            body.clear();
            s.read_to_string(&mut body).unwrap();
            if body.contains("darkscope_sensor_windows_total")
                && !body.contains("darkscope_sensor_windows_total 0")
            {
                break;
            }
        }
    }
    drop(stdin);
    assert!(child.wait().unwrap().success());
    assert!(body.contains("text/plain"), "{body}");
    assert!(body.contains("darkscope_sensor_received_total"), "{body}");
    assert!(
        body.contains("darkscope_sensor_malformed_total{reason=\"bad_ip\"} 0"),
        "{body}"
    );
    assert!(
        body.contains("darkscope_sensor_window_close_seconds{quantile=\"0.99\"}"),
        "{body}"
    );
}
