//! The files in deploy/ that operators install must stay valid: every
//! example config parses and validates, the systemd units pass
//! `systemd-analyze verify`, the scripts parse.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is the failure report

mod common;

use common::run_ok;
use darkscope_aggregator::config::Config;
use std::path::{Path, PathBuf};
use std::process::Command;

fn deploy(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(name)
}

#[test]
fn aggregator_configs_in_deploy_parse_and_validate() {
    for f in ["aggregator.example.toml", "compose-aggregator.toml"] {
        let c = Config::from_file(&deploy(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
        c.validate().unwrap_or_else(|e| panic!("{f}: {e}"));
    }
    let c = Config::from_file(&deploy("compose-aggregator.toml")).unwrap();
    assert_eq!(c.storage, darkscope_aggregator::config::Storage::Clickhouse);
    assert_eq!(
        c.query_auth,
        darkscope_aggregator::config::QueryAuth::Always
    );
}

#[test]
fn systemd_units_verify() {
    let Ok(out) = Command::new("systemd-analyze")
        .arg("verify")
        .arg(deploy("systemd/darkscope-sensor.service"))
        .arg(deploy("systemd/darkscope-aggregator.service"))
        .output()
    else {
        eprintln!("skipped: systemd-analyze is not installed here");
        return;
    };
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    // The binaries are not installed on a build machine; anything else is a defect.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("is not executable"))
        .collect();
    assert!(problems.is_empty(), "{problems:#?}");
    let sensor = std::fs::read_to_string(deploy("systemd/darkscope-sensor.service")).unwrap();
    assert!(sensor.contains("AmbientCapabilities=CAP_NET_RAW CAP_NET_ADMIN"));
    assert!(sensor.contains("User=darkscope-sensor") && sensor.contains("ProtectSystem=strict"));
    assert!(sensor.contains("StateDirectory=darkscope-sensor"));
}

#[test]
fn deploy_scripts_parse() {
    for f in [
        "install.sh",
        "setup.sh",
        "demo.sh",
        "container/check.sh",
        "container/local-bases.sh",
    ] {
        let st = Command::new("bash")
            .arg("-n")
            .arg(deploy(f))
            .status()
            .unwrap();
        assert!(st.success(), "{f} has a syntax error");
    }
}

/// `deploy/compose.yaml` passes Compose's own validation (`docker-compose
/// config`: schema, `depends_on` conditions, healthcheck, volumes, build
/// contexts). The images and the
/// steps compose runs are exercised by `deploy/container/check.sh`.
#[test]
fn compose_file_is_valid() {
    let out = Command::new("docker-compose")
        .args(["-f", "compose.yaml", "config"])
        .current_dir(deploy(""))
        .output()
        .expect("docker-compose is needed: `bash deploy/setup.sh` installs it");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (service, what) in [
        ("clickhouse", "Containerfile.clickhouse"),
        ("migrate", "service_healthy"),
        ("aggregator", "service_completed_successfully"),
    ] {
        assert!(
            text.contains(service) && text.contains(what),
            "{service}: {what}\n{text}"
        );
    }
    assert!(
        text.contains("127.0.0.1:8080:8080"),
        "published on loopback only"
    );
    // Compose checks the build context, not the file in it.
    for f in ["Containerfile.aggregator", "Containerfile.clickhouse"] {
        assert!(deploy("container").join(f).exists(), "{f}");
    }
}

/// `deploy/logrotate/darkscope` rotates a sensor's summary file the way
/// the sensor needs (real logrotate, forced, on a copy of the config
/// pointed at a temporary directory): the old lines move to `.1` and the
/// open file is truncated in place (the sensor appends, so its next line
/// starts the file again; `export` tests that side).
#[test]
fn logrotate_config_rotates_the_summary_file() {
    let bin = ["/usr/sbin/logrotate", "/usr/bin/logrotate"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("logrotate is needed: `bash deploy/setup.sh` installs it");
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("sensor");
    std::fs::create_dir(&spool).unwrap();
    let file = spool.join("summaries.jsonl");
    std::fs::write(&file, "{\"window\":1}\n{\"window\":2}\n").unwrap();
    let conf = std::fs::read_to_string(deploy("logrotate/darkscope"))
        .unwrap()
        .replace(
            "/var/lib/darkscope-sensor/",
            &format!("{}/", spool.display()),
        );
    assert!(conf.contains(&spool.display().to_string()), "{conf}");
    let conf_path = dir.path().join("darkscope.conf");
    std::fs::write(&conf_path, conf).unwrap();
    run_ok(
        Command::new(bin)
            .arg("-f")
            .arg("-s")
            .arg(dir.path().join("state"))
            .arg(&conf_path),
    );
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        "",
        "truncated in place"
    );
    assert_eq!(
        std::fs::read_to_string(spool.join("summaries.jsonl.1")).unwrap(),
        "{\"window\":1}\n{\"window\":2}\n"
    );
}

/// Under the sensor's unit (`ProtectSystem=strict`) only its
/// `StateDirectory` is writable: every path the example config writes to
/// (summary file, spool) must be inside it, or the service fails to start.
#[test]
fn sensor_example_writes_only_where_its_unit_allows() {
    let unit = std::fs::read_to_string(deploy("systemd/darkscope-sensor.service")).unwrap();
    let state = unit
        .lines()
        .find_map(|l| l.strip_prefix("StateDirectory="))
        .unwrap();
    let writable = format!("/var/lib/{state}/");
    let cfg: toml::Value =
        toml::from_str(&std::fs::read_to_string(deploy("sensor.example.toml")).unwrap()).unwrap();
    for (section, key) in [("output", "out"), ("upload", "spool_dir")] {
        let path = cfg[section][key].as_str().unwrap();
        assert!(
            path.starts_with(&writable),
            "[{section}] {key} = {path} is outside {writable}"
        );
    }
    let rotate = std::fs::read_to_string(deploy("logrotate/darkscope")).unwrap();
    assert!(
        rotate.contains(&format!("{writable}*.jsonl")),
        "logrotate covers the summary file"
    );
}
