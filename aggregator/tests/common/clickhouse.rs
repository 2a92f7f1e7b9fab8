//! A real ClickHouse server for the tests: Debian's `clickhouse-server`,
//! started from `deploy/clickhouse/single-node/` on a free loopback port in
//! a temporary directory, killed when the guard drops.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use darkscope_aggregator::store::clickhouse::{ClickHouseConfig, ClickHouseStore};
use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

pub struct Server {
    pub url: String,
    child: Child,
    _dir: tempfile::TempDir,
}

fn binary() -> &'static str {
    for c in ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("ClickHouse is needed for these tests: `bash deploy/setup.sh` installs Debian's clickhouse-server");
}

impl Server {
    pub fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let tcp = super::free_port();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse/single-node");
        for f in ["config.xml", "users.xml"] {
            let text = std::fs::read_to_string(src.join(f))
                .unwrap()
                .replace("@DIR@", dir.path().to_str().unwrap())
                .replace("@HTTP_PORT@", &port.to_string())
                .replace("@TCP_PORT@", &tcp.to_string());
            std::fs::write(dir.path().join(f), text).unwrap();
        }
        for d in ["log", "data", "tmp"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let mut child = Command::new(binary())
            .arg(format!(
                "--config-file={}",
                dir.path().join("config.xml").display()
            ))
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("log/stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let url = format!("http://127.0.0.1:{port}");
        let t0 = Instant::now();
        loop {
            if let Ok(r) = reqwest::blocking::get(format!("{url}/?query=SELECT%201")) {
                if r.status().is_success() {
                    break;
                }
            }
            let log = std::fs::read_to_string(dir.path().join("log/error.log")).unwrap_or_default()
                + &std::fs::read_to_string(dir.path().join("log/stderr.log")).unwrap_or_default();
            let exited = child.try_wait().ok().flatten().is_some();
            assert!(
                !exited && t0.elapsed() < Duration::from_secs(60),
                "ClickHouse did not start:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Server {
            url,
            child,
            _dir: dir,
        }
    }

    pub fn config(&self, database: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url.clone(),
            database: database.into(),
            ..Default::default()
        }
    }

    /// A migrated, empty database `name`.
    pub fn store(&self, name: &str) -> ClickHouseStore {
        let cfg = self.config(name);
        assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![1, 2, 3, 4]);
        assert!(
            ClickHouseStore::migrate(&cfg).unwrap().is_empty(),
            "migrate is idempotent"
        );
        ClickHouseStore::open(&cfg).unwrap()
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill9();
    }
}
