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
    dir: tempfile::TempDir,
}

fn binary() -> &'static str {
    for c in ["/usr/bin/clickhouse-server", "/usr/sbin/clickhouse-server"] {
        if Path::new(c).exists() {
            return c;
        }
    }
    panic!("ClickHouse is needed for these tests: `bash deploy/setup.sh` installs Debian's clickhouse-server");
}

/// Runs clickhouse-server on the config in `dir`; waits until `url` answers.
fn spawn(dir: &Path, url: &str) -> Child {
    let mut child = Command::new(binary())
        .arg(format!(
            "--config-file={}",
            dir.join("config.xml").display()
        ))
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("log/stderr.log")).unwrap())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        if let Ok(r) = reqwest::blocking::get(format!("{url}/?query=SELECT%201")) {
            if r.status().is_success() {
                return child;
            }
        }
        let log = std::fs::read_to_string(dir.join("log/error.log")).unwrap_or_default()
            + &std::fs::read_to_string(dir.join("log/stderr.log")).unwrap_or_default();
        let exited = child.try_wait().ok().flatten().is_some();
        assert!(
            !exited && t0.elapsed() < Duration::from_secs(60),
            "ClickHouse did not start:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
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
        let url = format!("http://127.0.0.1:{port}");
        let child = spawn(dir.path(), &url);
        Server { url, child, dir }
    }

    /// Starts the server again (after [`Server::kill9`]) on the same data and port.
    pub fn restart(&mut self) {
        self.kill9();
        self.child = spawn(self.dir.path(), &self.url);
    }

    pub fn config(&self, database: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.url.clone(),
            database: database.into(),
            // Tests read the export log right after storing.
            export_settle_secs: 0,
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
