//! Helpers shared by the sensor's integration tests.
#![allow(dead_code, missing_docs)]

use darkscope_common::Summary;
use darkscope_sensor::config::Config;
use darkscope_sensor::export::Collect;
use darkscope_sensor::metrics::Metrics;
use darkscope_sensor::pipeline::RunReport;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

pub const DARKNET: &str = "198.19.0.0/16,2001:db8:dead::/48";

pub fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/realscan")
        .join(name)
}

/// Runs the sensor library on a capture file and returns its summaries.
pub fn run_file(
    path: &Path,
    window_secs: u64,
    shards: usize,
    source_cap: usize,
) -> (Vec<Summary>, RunReport) {
    let mut cfg = Config::default();
    cfg.sensor.darknet = DARKNET.split(',').map(String::from).collect();
    cfg.capture.read = Some(path.to_path_buf());
    cfg.pipeline.window_secs = window_secs;
    cfg.pipeline.shards = shards;
    cfg.pipeline.source_cap = source_cap;
    let v = cfg.validate().expect("valid config");
    let out = Arc::new(Mutex::new(Vec::new()));
    let report = darkscope_sensor::run(
        &v,
        Box::new(Collect(out.clone())),
        Arc::new(Metrics::default()),
        Arc::new(AtomicBool::new(false)),
        None,
    )
    .expect("sensor run");
    let v = out.lock().expect("lock").clone();
    (v, report)
}
