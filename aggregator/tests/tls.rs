//! TLS on the aggregator's listener, and mutual TLS for sensors: a real
//! sensor uploads a real capture over HTTPS to a real aggregator, with
//! certificates the test makes itself (a private CA).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::*;
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Pki {
    ca: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    client_cert: PathBuf,
    client_key: PathBuf,
}

fn pki(dir: &Path) -> Pki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |names: Vec<String>, usage: ExtendedKeyUsagePurpose, name: &str| {
        let mut p = CertificateParams::new(names).unwrap();
        p.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = p.signed_by(&key, &ca, &ca_key).unwrap();
        let (c, k) = (
            dir.join(format!("{name}.pem")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (server_cert, server_key) = leaf(
        vec!["127.0.0.1".into(), "localhost".into()],
        ExtendedKeyUsagePurpose::ServerAuth,
        "server",
    );
    let (client_cert, client_key) = leaf(
        vec!["s-tls".into()],
        ExtendedKeyUsagePurpose::ClientAuth,
        "client",
    );
    let ca_path = dir.join("ca.pem");
    std::fs::write(&ca_path, ca.pem()).unwrap();
    Pki {
        ca: ca_path,
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// An HTTPS client trusting the test CA, optionally with the client certificate.
fn client(p: &Pki, with_identity: bool) -> reqwest::blocking::Client {
    let mut b = reqwest::blocking::Client::builder().add_root_certificate(
        reqwest::Certificate::from_pem(&std::fs::read(&p.ca).unwrap()).unwrap(),
    );
    if with_identity {
        let mut pem = std::fs::read(&p.client_cert).unwrap();
        pem.extend(std::fs::read(&p.client_key).unwrap());
        b = b.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    b.build().unwrap()
}

fn start(dir: &Path, port: u16, p: &Pki, mutual: bool) -> Child {
    start_with(dir, port, p, mutual, "")
}

fn start_with(dir: &Path, port: u16, p: &Pki, mutual: bool, extra: &str) -> Child {
    let config = dir.join("tls.toml");
    let mut text = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\n",
        p.server_cert.display(),
        p.server_key.display()
    );
    if mutual {
        text += &format!("tls_client_ca = \"{}\"\n", p.ca.display());
    }
    text += extra;
    std::fs::write(&config, text).unwrap();
    let child = Command::new(aggregator_bin())
        .arg("--config")
        .arg(&config)
        .arg("--database")
        .arg(dir.join("darkscope.db"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
    let c = client(p, true);
    let t0 = Instant::now();
    while c
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .is_err()
    {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "aggregator did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    child
}

fn sensor(dir: &Path, port: u16, spool: &str, args: &[&Path]) -> Command {
    let mut c = Command::new(sensor_bin());
    c.arg("--read")
        .arg(testdata("all-small.pcap"))
        .args(["--darknet", DARKNET, "--id", "s-tls", "--window", "60"])
        .args([
            "--aggregator",
            &format!("https://127.0.0.1:{port}"),
            "--token-file",
        ])
        .arg(dir.join("s-tls.token"))
        .arg("--spool")
        .arg(dir.join(spool))
        .args(["--drain-secs", "3", "--out"])
        .arg(dir.join(format!("{spool}.jsonl")))
        .env("RUST_LOG", "error");
    let flags = ["--ca-file", "--client-cert", "--client-key"];
    for (flag, path) in flags.iter().zip(args) {
        c.arg(flag).arg(path);
    }
    c
}

fn pending(dir: &Path, spool: &str) -> usize {
    std::fs::read_dir(dir.join(spool))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .count()
        })
        .unwrap_or(0)
}

fn stored_packets(p: &Pki, port: u16) -> u64 {
    let v: serde_json::Value = client(p, true)
        .get(format!(
            "https://127.0.0.1:{port}/api/v1/overview?{ALL_TIME}"
        ))
        .send()
        .unwrap()
        .json()
        .unwrap();
    v["packets"].as_u64().unwrap()
}

#[test]
fn sensors_upload_over_tls_and_mutual_tls_admits_only_certified_clients() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let agg = Aggregator::new(d);
    agg.add_sensor(d, "s-tls");
    let port = free_port();

    // TLS: a sensor trusting the CA uploads everything.
    let mut server = start(d, port, &p, false);
    let plain = reqwest::blocking::get(format!("http://127.0.0.1:{port}/healthz"));
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP answered"
    );
    // Without the private CA the sensor cannot verify the aggregator: nothing leaves the spool.
    assert!(sensor(d, port, "spool-untrusted", &[])
        .status()
        .unwrap()
        .success());
    assert!(pending(d, "spool-untrusted") > 0);
    assert_eq!(stored_packets(&p, port), 0);
    assert!(sensor(d, port, "spool-a", &[&p.ca])
        .status()
        .unwrap()
        .success());
    assert_eq!(pending(d, "spool-a"), 0);
    assert_eq!(stored_packets(&p, port), 30_346);
    server.kill().unwrap();
    server.wait().unwrap();

    // Mutual TLS: without a client certificate the handshake fails; with it,
    // the summaries (retried from the first sensor's spool) arrive once.
    let mut server = start(d, port, &p, true);
    let no_cert = client(&p, false)
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send();
    assert!(
        no_cert.is_err(),
        "a client without a certificate was let in"
    );
    assert!(sensor(d, port, "spool-untrusted", &[&p.ca])
        .status()
        .unwrap()
        .success());
    assert!(
        pending(d, "spool-untrusted") > 0,
        "uploaded without a client certificate"
    );
    assert!(sensor(
        d,
        port,
        "spool-untrusted",
        &[&p.ca, &p.client_cert, &p.client_key]
    )
    .status()
    .unwrap()
    .success());
    assert_eq!(pending(d, "spool-untrusted"), 0);
    assert_eq!(
        stored_packets(&p, port),
        30_346,
        "retried windows stored once"
    );
    server.kill().unwrap();
    server.wait().unwrap();
}

/// Federation to a peer that serves mutual TLS with a private CA: the
/// puller trusts the peer's CA and presents its client certificate; without
/// the certificate the pull fails and nothing is stored.
#[test]
fn federation_pulls_from_a_peer_over_mutual_tls() {
    use darkscope_aggregator::federation::{self, FederationConfig, PeerConfig};
    use darkscope_aggregator::store::{sqlite::SqliteStore, Scope, Store};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let p = pki(d);
    let th = Aggregator::new(d);
    th.add_sensor(d, "s-tls");
    let peer_token = darkscope_aggregator::auth::new_token();
    std::fs::write(d.join("jp-pulls-th.token"), &peer_token).unwrap();
    std::fs::write(d.join("th.key"), "cd".repeat(32)).unwrap();
    let port = free_port();
    let mut server = start_with(
        d,
        port,
        &p,
        true,
        &format!(
            "[federation]\nid = \"th\"\nkey_file = \"{}\"\n[[federation.peers]]\nid = \"jp\"\ninbound_token_sha256 = \"{}\"\n",
            d.join("th.key").display(),
            federation::hex(&darkscope_aggregator::auth::token_hash(&peer_token))
        ),
    );
    assert!(
        sensor(d, port, "spool", &[&p.ca, &p.client_cert, &p.client_key])
            .status()
            .unwrap()
            .success()
    );
    std::fs::write(d.join("jp.key"), "ef".repeat(32)).unwrap();
    let peer = |with_cert: bool| PeerConfig {
        url: Some(format!("https://127.0.0.1:{port}")),
        token_file: Some(d.join("jp-pulls-th.token")),
        ca_file: Some(p.ca.clone()),
        client_cert: with_cert.then(|| p.client_cert.clone()),
        client_key: with_cert.then(|| p.client_key.clone()),
        ..PeerConfig::named("th")
    };
    let jp = std::sync::Arc::new(SqliteStore::open(&d.join("jp.db")).unwrap());
    let rt = tokio::runtime::Runtime::new().unwrap();
    let pull = |peer: PeerConfig| {
        let fed = FederationConfig {
            id: "jp".into(),
            key_file: Some(d.join("jp.key")),
            peers: vec![peer.clone()],
            ..Default::default()
        };
        let client = federation::peer_client(&peer).unwrap();
        rt.block_on(federation::pull_once(
            jp.clone() as std::sync::Arc<dyn Store>,
            &client,
            &fed,
            &peer,
            100,
        ))
    };
    let e = pull(peer(false)).unwrap_err().to_string();
    assert!(e.contains("request failed"), "{e}");
    let all = |s: &SqliteStore| {
        s.overview(
            darkscope_common::Timestamp::parse_rfc3339("2026-01-01T00:00:00Z").unwrap(),
            darkscope_common::Timestamp::parse_rfc3339("2027-01-01T00:00:00Z").unwrap(),
            Scope::Global,
        )
        .unwrap()
        .packets
    };
    assert_eq!(all(&jp), 0);
    let r = pull(peer(true)).unwrap();
    assert!(r.imported >= 1);
    assert_eq!(all(&jp), 30_346);
    server.kill().unwrap();
    server.wait().unwrap();
}
