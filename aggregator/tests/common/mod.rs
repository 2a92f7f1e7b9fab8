//! Helpers shared by the aggregator's integration tests: real aggregator and
//! sensor processes on loopback.
#![allow(dead_code, missing_docs, clippy::unwrap_used, clippy::expect_used)]

pub mod browser;
pub mod clickhouse;

use darkscope_common::hll::Hll;
use darkscope_common::wire::*;
use darkscope_common::{
    Addr, ClassSet, Fingerprint, FingerprintSet, PacketClass, Proto, Timestamp,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub const DARKNET: &str = "198.19.0.0/16,2001:db8:dead::/48";
pub const ALL_TIME: &str = "from=2026-01-01T00:00:00Z&to=2027-01-01T00:00:00Z";

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/realscan")
        .join(name)
}

pub fn aggregator_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_darkscope-aggregator"))
}

/// The sensor binary beside ours in the target directory, brought up to
/// date once per test process (cargo does nothing when it is; this
/// package's tests alone would otherwise run a stale or missing one).
pub fn sensor_bin() -> PathBuf {
    static BUILT: std::sync::Once = std::sync::Once::new();
    let p = aggregator_bin().with_file_name("darkscope-sensor");
    BUILT.call_once(|| {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let st = Command::new(cargo)
            .args([
                "build",
                "-q",
                "-p",
                "darkscope-sensor",
                "--bin",
                "darkscope-sensor",
            ])
            .status()
            .unwrap();
        assert!(st.success());
    });
    p
}

/// Runs `cmd` to its end; fails the test with its stderr unless it
/// succeeded.
pub fn run_ok(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub struct Aggregator {
    /// Optional config file passed with --config.
    pub config: Option<PathBuf>,
    pub db: PathBuf,
    pub port: u16,
    child: Option<Child>,
}

impl Aggregator {
    pub fn new(dir: &Path) -> Aggregator {
        Aggregator {
            config: None,
            db: dir.join("darkscope.db"),
            port: free_port(),
            child: None,
        }
    }

    /// An aggregator in `dir` that runs with a config file holding `toml`.
    pub fn with_config(dir: &Path, toml: &str) -> Aggregator {
        let mut agg = Aggregator::new(dir);
        let cfg = dir.join("agg.toml");
        std::fs::write(&cfg, toml).unwrap();
        agg.config = Some(cfg);
        agg
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn start(&mut self) {
        self.spawn(None);
    }

    /// Like [`Aggregator::start`], logging at `level` into `log`.
    pub fn start_logging(&mut self, log: &Path, level: &str) {
        self.spawn(Some((log, level)));
    }

    fn spawn(&mut self, log: Option<(&Path, &str)>) {
        let mut cmd = Command::new(aggregator_bin());
        if let Some(c) = &self.config {
            cmd.arg("--config").arg(c);
        }
        cmd.arg("--database").arg(&self.db).args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{}", self.port),
        ]);
        match log {
            Some((file, level)) => {
                cmd.env("RUST_LOG", level)
                    .stderr(std::fs::File::create(file).unwrap());
            }
            None => {
                cmd.env("RUST_LOG", "warn");
            }
        }
        self.child = Some(cmd.spawn().unwrap());
        let t0 = Instant::now();
        while reqwest::blocking::get(format!("{}/healthz", self.url())).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "aggregator did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// Registers a sensor; returns its token file.
    pub fn add_sensor(&self, dir: &Path, id: &str) -> PathBuf {
        let out = run_ok(
            Command::new(aggregator_bin())
                .arg("--database")
                .arg(&self.db)
                .args(["sensor", "add", "--id", id, "--country", "JP"]),
        );
        let path = dir.join(format!("{id}.token"));
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }

    /// Runs an admin command (`subscriber add ...`, `analyst add ...`) on
    /// the database; returns what it printed (a new token).
    pub fn admin(&self, args: &[&str]) -> String {
        let out = run_ok(
            Command::new(aggregator_bin())
                .arg("--database")
                .arg(&self.db)
                .args(args),
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// GET with a bearer token.
    pub fn get_as(&self, token: &str, path: &str) -> Value {
        let r = reqwest::blocking::Client::new()
            .get(format!("{}{path}", self.url()))
            .bearer_auth(token)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }

    pub fn get(&self, path: &str) -> Value {
        let r = reqwest::blocking::get(format!("{}{path}", self.url())).unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().unwrap()
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub fn sensor_cmd(agg: &Aggregator, dir: &Path, id: &str, capture: &str, window: u64) -> Command {
    sensor_cmd_to(&agg.url(), dir, id, capture, window)
}

/// Like [`sensor_cmd`], uploading to `urls` (comma-separated, tried in turn).
pub fn sensor_cmd_to(urls: &str, dir: &Path, id: &str, capture: &str, window: u64) -> Command {
    let mut c = Command::new(sensor_bin());
    c.arg("--read")
        .arg(testdata(capture))
        .args([
            "--darknet",
            DARKNET,
            "--id",
            id,
            "--window",
            &window.to_string(),
        ])
        .args(["--aggregator", urls, "--token-file"])
        .arg(dir.join(format!("{id}.token")))
        .arg("--spool")
        .arg(dir.join(format!("spool-{id}")))
        .args(["--drain-secs", "60", "--out"])
        .arg(dir.join(format!("{id}.jsonl")))
        .env("RUST_LOG", "warn");
    c
}

/// `cmd` again, with the value after each flag in `values` replaced
/// (`--read` to `-` for standard input, say).
pub fn with_values(cmd: &Command, values: &[(&str, &std::ffi::OsStr)]) -> Command {
    let args: Vec<&std::ffi::OsStr> = cmd.get_args().collect();
    let mut c = Command::new(cmd.get_program());
    for (i, a) in args.iter().enumerate() {
        let flag = i.checked_sub(1).and_then(|j| args[j].to_str());
        c.arg(
            values
                .iter()
                .find(|(f, _)| Some(*f) == flag)
                .map_or(*a, |(_, v)| v),
        );
    }
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            c.env(k, v);
        }
    }
    c
}

/// Starts `cmd` (a sensor command, with `values` replaced) reading
/// `capture` from its standard input, logging to `log`, and writes the
/// first 70 % of the file to it; returns the sensor, its input and the
/// rest of the file (write it, then drop the input, to finish).
pub fn sensor_on_stdin(
    cmd: &Command,
    values: &[(&str, &std::ffi::OsStr)],
    capture: &str,
    log: &Path,
) -> (Child, std::process::ChildStdin, Vec<u8>) {
    use std::io::Write;
    let mut all = vec![("--read", std::ffi::OsStr::new("-"))];
    all.extend_from_slice(values);
    let mut sensor = with_values(cmd, &all)
        .stdin(std::process::Stdio::piped())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .unwrap();
    let mut pcap = std::fs::read(testdata(capture)).unwrap();
    let rest = pcap.split_off(pcap.len() * 7 / 10);
    let mut stdin = sensor.stdin.take().unwrap();
    stdin.write_all(&pcap).unwrap();
    stdin.flush().unwrap();
    (sensor, stdin, rest)
}

pub fn truth(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(testdata(&format!("{name}.truth.json"))).unwrap())
        .unwrap()
}

/// (proto, port) -> (packets, sources) over the whole stored range.
pub fn api_ports(agg: &Aggregator) -> BTreeMap<(String, u64), (u64, u64)> {
    api_ports_in(agg, "local")
}

/// [`api_ports`] in a scope (`local` or `global`).
pub fn api_ports_in(agg: &Aggregator, scope: &str) -> BTreeMap<(String, u64), (u64, u64)> {
    let v = agg.get(&format!(
        "/api/v1/ports/top?{ALL_TIME}&limit=1000&scope={scope}"
    ));
    port_map(&v["ports"])
}

/// Port rows (API answer or truth file) as (proto, port) -> (packets, sources).
pub fn port_map(rows: &Value) -> BTreeMap<(String, u64), (u64, u64)> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                (
                    p["proto"].as_str().unwrap().to_string(),
                    p["port"].as_u64().unwrap(),
                ),
                (
                    p["packets"].as_u64().unwrap(),
                    p["sources"].as_u64().unwrap(),
                ),
            )
        })
        .collect()
}

pub fn stored_packets_and_windows(agg: &Aggregator) -> (u64, u64) {
    let o = agg.get(&format!("/api/v1/overview?{ALL_TIME}"));
    (
        o["packets"].as_u64().unwrap(),
        o["windows"].as_u64().unwrap(),
    )
}

pub fn lines(path: &Path) -> u64 {
    std::fs::read_to_string(path)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0)
}

pub const MIN: u64 = 60_000_000;
pub const T0: u64 = 1_763_683_200_000_000; // 2025-11-21T00:00:00Z

/// A summary of `sensor` for window `w` (minutes after T0): each source in
/// `srcs` sends `n` TCP SYNs to port 23.
pub fn summary(sensor: &str, w: u64, srcs: &[u32], n: u64) -> Summary {
    summary_at(sensor, T0 + w * MIN, srcs, n)
}

/// Like [`summary`] for the window starting at `start` (µs).
pub fn summary_at(sensor: &str, start: u64, srcs: &[u32], n: u64) -> Summary {
    let mut hll = Hll::new();
    let sources: Vec<SourceRow> = srcs
        .iter()
        .map(|&s| {
            hll.insert(Addr::v4(s));
            let mut top = TopPorts::default();
            top.push(PortCount {
                proto: Proto::Tcp,
                port: 23,
                packets: n,
            });
            SourceRow {
                ip: Addr::v4(s).to_ip(),
                packets: n,
                bytes: 40 * n,
                ports: 1,
                destinations: 1,
                top_ports: top,
                classes: ClassSet(1 << PacketClass::TcpSyn as u8),
                fingerprints: FingerprintSet(if s == 7 { Fingerprint::Mirai.bit() } else { 0 }),
                first_seen: Timestamp(start + 1),
                last_seen: Timestamp(start + 2),
            }
        })
        .collect();
    let packets = n * srcs.len() as u64;
    Summary {
        schema: SCHEMA,
        sensor: SensorInfo {
            id: sensor.into(),
            country: "JP".into(),
            darknet: vec![],
            monitored_ipv4: 256,
        },
        window: Window {
            start: Timestamp(start),
            end: Timestamp(start + MIN),
        },
        capture: CaptureHealth {
            received: packets + 10,
            kernel_dropped: 1,
            ..Default::default()
        },
        classes: ClassTotals {
            tcp_syn: packets,
            ..Default::default()
        },
        fingerprints: Default::default(),
        totals: Totals {
            packets,
            bytes: 40 * packets,
            sources: srcs.len() as u64,
            sources_hll: hll.clone(),
        },
        truncation: Truncation {
            exact: true,
            ..Default::default()
        },
        ports: vec![PortRow {
            proto: Proto::Tcp,
            port: 23,
            packets,
            bytes: 40 * packets,
            sources: srcs.len() as u64,
            destinations: 1,
            sources_hll: hll,
        }],
        sources,
    }
}

/// Hosts of a capture's tshark truth per owner, with their packets: each
/// source goes to the first owner whose prefixes contain it (list the
/// longest prefixes first), or to nobody.
#[allow(dead_code)]
pub fn truth_owners(
    capture: &str,
    owners: &[(&'static str, &str)],
) -> BTreeMap<&'static str, BTreeMap<String, u64>> {
    let sets: Vec<_> = owners
        .iter()
        .map(|(o, p)| (*o, darkscope_common::PrefixSet::parse_list(p).unwrap()))
        .collect();
    let mut want: BTreeMap<&str, BTreeMap<String, u64>> = BTreeMap::new();
    for s in truth(capture)["sources"].as_array().unwrap() {
        let ip = s["ip"].as_str().unwrap();
        let a = Addr::from(ip.parse::<std::net::IpAddr>().unwrap());
        if let Some((owner, _)) = sets.iter().find(|(_, set)| set.contains(a)) {
            want.entry(owner)
                .or_default()
                .insert(ip.to_string(), s["packets"].as_u64().unwrap());
        }
    }
    want
}

#[allow(dead_code)]
/// A loopback webhook receiver: answers 500 to the first delivery and 200
/// after; returns every request (headers and body) it saw.
pub fn receiver() -> (String, std::sync::mpsc::Receiver<(String, Vec<u8>)>) {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for (i, conn) in l.incoming().enumerate() {
            let Ok(mut c) = conn else { return };
            let mut buf = Vec::new();
            let mut chunk = [0u8; 4096];
            // Read headers, then the body by Content-Length.
            let (head, body_start) = loop {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break (String::new(), 0);
                }
                buf.extend_from_slice(&chunk[..n]);
                if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break (String::from_utf8_lossy(&buf[..p]).to_string(), p + 4);
                }
            };
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap_or(0))
                })
                .unwrap_or(0);
            while buf.len() < body_start + len {
                let n = c.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            let status = if i == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = c.write_all(
                format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let _ = tx.send((head, buf[body_start..].to_vec()));
        }
    });
    (url, rx)
}

/// Countries of the background networks of [`one_network_campaign`].
pub const CAMPAIGN_COUNTRIES: [&str; 10] =
    ["JP", "US", "CN", "BR", "IN", "RU", "KR", "VN", "TW", "ID"];
/// First window of the campaign.
pub const CAMPAIGN_ONSET: u64 = 180;

/// The ip2asn table of [`one_network_campaign`]: 10.i.0.0/16 is AS 64500+i
/// (i < 30, countries cycling through [`CAMPAIGN_COUNTRIES`]); 10.200.0.0/16
/// is AS 64999, the only one in DE.
pub fn campaign_tsv() -> String {
    let mut tsv = String::new();
    for i in 0..30u32 {
        tsv += &format!(
            "10.{i}.0.0\t10.{i}.255.255\t{}\t{}\tNet {i}\n",
            64500 + i,
            CAMPAIGN_COUNTRIES[i as usize % 10]
        );
    }
    tsv + "10.200.0.0\t10.200.255.255\t64999\tDE\tCampaign net\n"
}

/// 230 windows of sensor `a` on tcp/23: ten sources from each of 30
/// networks (a different ten each window) and a handful from AS 64999;
/// from [`CAMPAIGN_ONSET`] for 20 windows, 40 more from AS 64999.
pub fn one_network_campaign(store: &dyn darkscope_aggregator::store::Store) {
    for w in 0..230u64 {
        let mut srcs: Vec<u32> = (0..30u32)
            .flat_map(|i| {
                (0..10u32).map(move |k| 0x0a00_0000 | i << 16 | ((w as u32 * 10 + k) % 5000))
            })
            .collect();
        let campaign = if (CAMPAIGN_ONSET..CAMPAIGN_ONSET + 20).contains(&w) {
            45
        } else {
            5
        };
        srcs.extend((0..campaign).map(|k| 0x0ac8_0000 | ((w as u32 * 50 + k) % 60000)));
        store
            .insert_summary(&summary("a", w, &srcs, 1), "JP")
            .unwrap();
    }
}

/// Runs a fresh detector (with `table` as its enrichment) over the 230
/// windows; returns the alerts it opened.
pub fn detect_all(
    store: &dyn darkscope_aggregator::store::Store,
    table: Option<std::sync::Arc<darkscope_aggregator::enrich::AsnTable>>,
) -> Vec<darkscope_aggregator::store::Alert> {
    use darkscope_aggregator::detect::{DetectConfig, Detector};
    let mut d = Detector::new(DetectConfig::default()).with_enrichment(table);
    d.history_us = 1000 * MIN;
    let mut opened = Vec::new();
    for w in 0..230u64 {
        let now = Timestamp(T0 + (w + 1) * MIN + d.grace_us);
        opened.extend(d.tick(store, now).unwrap());
    }
    opened
}

/// The campaign raised exactly its AS and country alerts on tcp/23,
/// within two windows of the onset.
pub fn assert_campaign_alerts(a: &[darkscope_aggregator::store::Alert]) {
    let mut groups: Vec<(&str, u16, u64)> = a
        .iter()
        .map(|a| {
            (
                a.group.as_str(),
                a.port,
                (a.start.0 - T0) / MIN - CAMPAIGN_ONSET,
            )
        })
        .collect();
    groups.sort();
    assert_eq!(groups.len(), 2, "{a:?}");
    assert_eq!((groups[0].0, groups[0].1), ("asn:64999", 23));
    assert_eq!((groups[1].0, groups[1].1), ("country:DE", 23));
    assert!(groups.iter().all(|g| g.2 <= 2), "delays {groups:?}");
}
