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

/// Runs `sql` on the server at `url` and returns its answer; panics with
/// ClickHouse's message if it refuses.
pub fn query(url: &str, sql: &str) -> String {
    let r = reqwest::blocking::Client::new()
        .post(url)
        .body(sql.to_string())
        .send()
        .unwrap();
    let ok = r.status().is_success();
    let text = r.text().unwrap();
    assert!(ok, "{sql}: {text}");
    text
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
        assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![1, 2, 3, 4, 5]);
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

/// A ClickHouse cluster on loopback: Debian's ZooKeeper and four
/// `clickhouse-server`s, 2 shards × 2 replicas, configured from
/// `deploy/clickhouse/single-node/` plus `deploy/clickhouse/cluster/cluster.xml`;
/// all killed when the guard drops.
pub struct Cluster {
    /// HTTP interfaces of the nodes: shard 1 replica 1, s1r2, s2r1, s2r2.
    pub urls: Vec<String>,
    /// Native (TCP) ports of the nodes, as distributed DDL names hosts.
    pub tcp: Vec<u16>,
    nodes: Vec<Child>,
    zookeeper: Child,
    dir: tempfile::TempDir,
}

/// Debian's ZooKeeper jar (`bash deploy/setup.sh` installs it).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";

impl Cluster {
    pub const NAME: &'static str = "darkscope";

    pub fn start() -> Cluster {
        assert!(
            Path::new(ZOOKEEPER_JAR).exists(),
            "ZooKeeper is needed for the cluster tests: `bash deploy/setup.sh` installs Debian's zookeeper"
        );
        let dir = tempfile::tempdir().unwrap();
        let zk_port = super::free_port();
        let zk_dir = dir.path().join("zookeeper");
        std::fs::create_dir_all(&zk_dir).unwrap();
        std::fs::write(
            zk_dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={zk_port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nmaxClientCnxns=0\n",
                zk_dir.display()
            ),
        )
        .unwrap();
        let zookeeper = Command::new("java")
            .args([
                "-Xmx256m",
                "-Dzookeeper.admin.enableServer=false",
                "-cp",
                &format!("/etc/zookeeper/conf:{ZOOKEEPER_JAR}"),
                "org.apache.zookeeper.server.ZooKeeperServerMain",
            ])
            .arg(zk_dir.join("zoo.cfg"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(zk_dir.join("stderr.log")).unwrap())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        // The port opens before ZooKeeper serves (it then drops clients
        // mid-handshake, and ClickHouse 18.16 may crash on that): wait
        // until `srvr` reports a mode.
        // A starting ZooKeeper may also accept and never answer: every
        // probe is bounded.
        let serving = || {
            use std::io::{Read, Write};
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], zk_port));
            let Ok(mut c) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            else {
                return false;
            };
            let _ = c.set_read_timeout(Some(Duration::from_secs(1)));
            let _ = c.set_write_timeout(Some(Duration::from_secs(1)));
            let mut out = String::new();
            c.write_all(b"srvr").is_ok()
                && c.read_to_string(&mut out).is_ok()
                && out.contains("Mode:")
        };
        while !serving() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "ZooKeeper did not start: {}",
                std::fs::read_to_string(zk_dir.join("stderr.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let http: Vec<u16> = (0..4).map(|_| super::free_port()).collect();
        let tcp: Vec<u16> = (0..4).map(|_| super::free_port()).collect();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/clickhouse");
        let layout = [("1", "r1"), ("1", "r2"), ("2", "r1"), ("2", "r2")];
        let mut dirs = Vec::new();
        for (i, (shard, replica)) in layout.iter().enumerate() {
            let d = dir.path().join(format!("node{i}"));
            for sub in ["log", "data", "tmp", "config.d"] {
                std::fs::create_dir_all(d.join(sub)).unwrap();
            }
            for f in ["config.xml", "users.xml"] {
                let text = std::fs::read_to_string(src.join("single-node").join(f))
                    .unwrap()
                    .replace("@DIR@", d.to_str().unwrap())
                    .replace("@HTTP_PORT@", &http[i].to_string())
                    .replace("@TCP_PORT@", &tcp[i].to_string());
                std::fs::write(d.join(f), text).unwrap();
            }
            let text = std::fs::read_to_string(src.join("cluster/cluster.xml"))
                .unwrap()
                .replace("@SHARD@", shard)
                .replace("@REPLICA@", replica)
                .replace("@INTERSERVER_PORT@", &super::free_port().to_string())
                .replace("@ZK_PORT@", &zk_port.to_string())
                .replace("@S1R1@", &tcp[0].to_string())
                .replace("@S1R2@", &tcp[1].to_string())
                .replace("@S2R1@", &tcp[2].to_string())
                .replace("@S2R2@", &tcp[3].to_string());
            std::fs::write(d.join("config.d/cluster.xml"), text).unwrap();
            dirs.push(d);
        }
        let urls: Vec<String> = http
            .iter()
            .map(|p| format!("http://127.0.0.1:{p}"))
            .collect();
        let nodes = dirs.iter().zip(&urls).map(|(d, u)| spawn(d, u)).collect();
        Cluster {
            urls,
            tcp,
            nodes,
            zookeeper,
            dir,
        }
    }

    /// The config of a darkscope store on node `i` of the cluster.
    pub fn config(&self, i: usize, database: &str) -> ClickHouseConfig {
        ClickHouseConfig {
            url: self.urls[i].clone(),
            database: database.into(),
            export_settle_secs: 0,
            cluster: Some(Self::NAME.into()),
            ..Default::default()
        }
    }

    /// A migrated, empty database `name`, used through node `i`.
    pub fn store(&self, i: usize, name: &str) -> ClickHouseStore {
        let cfg = self.config(i, name);
        assert_eq!(ClickHouseStore::migrate(&cfg).unwrap(), vec![1, 2, 3, 4, 5]);
        ClickHouseStore::open(&cfg).unwrap()
    }

    /// Kills node `i` (as a crash would).
    pub fn kill9(&mut self, i: usize) {
        let _ = self.nodes[i].kill();
        let _ = self.nodes[i].wait();
    }

    /// Starts node `i` again (after [`Cluster::kill9`]) on its data and ports.
    pub fn restart(&mut self, i: usize) {
        self.kill9(i);
        self.nodes[i] = spawn(&self.dir.path().join(format!("node{i}")), &self.urls[i]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill9(i);
        }
        let _ = self.zookeeper.kill();
        let _ = self.zookeeper.wait();
        // A failed test (often a slow host on a loaded machine) shows what
        // the servers said, and keeps their logs and data for a closer look.
        if std::thread::panicking() {
            self.dir.disable_cleanup(true);
            let dir = self.dir.path();
            for i in 0..self.nodes.len() {
                let log = std::fs::read_to_string(dir.join(format!("node{i}/log/error.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                eprintln!("--- node{i} error.log (last {} lines):", tail.len());
                for l in tail.iter().rev() {
                    eprintln!("{l}");
                }
            }
            eprintln!("--- cluster logs and data kept in {}", dir.display());
        }
    }
}
