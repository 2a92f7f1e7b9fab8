//! darkscope sensor: captures darknet traffic with libpcap, decodes and
//! classifies every packet, keeps per-window statistics on a sharded lock-free
//! pipeline, and emits one [`darkscope_common::Summary`] per window.
//!
//! Modules, in the order a packet meets them: [`capture`] (the only one that
//! knows libpcap), [`decode`], [`classify`], [`record`], [`pipeline`] (threads
//! and channels), [`stats`] (shards, merge, summary), [`export`] (sinks);
//! beside them [`config`] and [`metrics`]. See ARCHITECTURE.md.

pub mod capture;
pub mod classify;
pub mod config;
pub mod decode;
pub mod export;
pub mod metrics;
pub mod pipeline;
pub mod privileges;
pub mod record;
pub mod stats;
pub mod upload;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Why a sensor run failed.
#[derive(Debug, thiserror::Error)]
pub enum SensorError {
    /// The capture could not be opened.
    #[error(transparent)]
    Capture(#[from] capture::CaptureError),
    /// The pipeline failed.
    #[error(transparent)]
    Pipeline(#[from] pipeline::PipelineError),
}

/// Opens the configured input and runs the pipeline into `sink` until the
/// input ends or `stop` is set.
pub fn run(
    cfg: &config::Validated,
    sink: Box<dyn export::Sink>,
    metrics: Arc<metrics::Metrics>,
    stop: Arc<AtomicBool>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<pipeline::RunReport, SensorError> {
    let cap = capture::Capture::open(&cfg.source)?;
    run_capture(cap, cfg, sink, metrics, stop, progress)
}

/// Runs the pipeline on an input already opened (see [`privileges`]: the
/// binary opens it, gives up its privileges, then starts everything else).
pub fn run_capture(
    cap: capture::Capture,
    cfg: &config::Validated,
    sink: Box<dyn export::Sink>,
    metrics: Arc<metrics::Metrics>,
    stop: Arc<AtomicBool>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<pipeline::RunReport, SensorError> {
    if let Some(pb) = &progress {
        pb.set_length(cap.file_size());
    }
    Ok(pipeline::run(
        cap,
        &cfg.pipeline,
        sink,
        metrics,
        stop,
        progress,
    )?)
}
