//! `darkscope-ingest-bench`: posts pre-built zstd summaries to an aggregator
//! from many sensors at once and reports summaries/s and ingest latency.

use anyhow::{bail, Context, Result};
use clap::Parser;
use darkscope_benches::synth;
use hdrhistogram::Histogram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Load an aggregator with summaries of `--sources` source rows each.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Aggregator base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Directory with one `<sensor-id>.token` file per sensor.
    #[arg(long)]
    tokens: PathBuf,
    #[command(flatten)]
    batch: synth::Batch,
    /// Concurrent uploads.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Body form: `binary` (what sensors send by default) or `json`.
    #[arg(long, default_value = "binary", value_parser = ["binary", "json"])]
    format: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let sensors = darkscope_benches::read_tokens(&cli.tokens)
        .with_context(|| format!("reading {}", cli.tokens.display()))?;
    if sensors.is_empty() {
        bail!("no *.token files in {}", cli.tokens.display());
    }
    eprintln!(
        "building {} summaries ({} sources each)…",
        cli.batch.summaries, cli.batch.sources
    );
    let binary = cli.format == "binary";
    let media = if binary {
        darkscope_common::wire::BINARY_MEDIA_TYPE
    } else {
        "application/json"
    };
    let t_build = Instant::now();
    let ids: Vec<String> = sensors.iter().map(|s| s.0.clone()).collect();
    let bodies: Vec<(usize, Vec<u8>)> = (0..cli.batch.summaries)
        .map(|i| {
            let s = i % sensors.len();
            let sum = cli.batch.summary(&ids, i);
            let raw = if binary {
                sum.to_binary().expect("summaries encode")
            } else {
                serde_json::to_vec(&sum).expect("summaries serialise")
            };
            (s, zstd::encode_all(&raw[..], 3).expect("zstd in memory"))
        })
        .collect();
    let mean_kib = bodies.iter().map(|b| b.1.len()).sum::<usize>() / bodies.len() / 1024;
    eprintln!(
        "built in {:.1?} (mean {mean_kib} KiB compressed); sending with {} connections…",
        t_build.elapsed(),
        cli.concurrency
    );
    let bodies = Arc::new(bodies);
    let sensors = Arc::new(sensors);
    let next = Arc::new(AtomicUsize::new(0));
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new(3)?));
    let failures = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let workers: Vec<_> = (0..cli.concurrency)
        .map(|_| {
            let (bodies, sensors, next, hist, failures) = (
                bodies.clone(),
                sensors.clone(),
                next.clone(),
                hist.clone(),
                failures.clone(),
            );
            let url = format!("{}/api/v1/summaries", cli.url.trim_end_matches('/'));
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut local = Histogram::<u64>::new(3).expect("valid histogram");
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((s, body)) = bodies.get(i) else {
                        break;
                    };
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&sensors[*s].1)
                        .header("Content-Encoding", "zstd")
                        .header("Content-Type", media)
                        .body(body.clone())
                        .send();
                    let ok = matches!(&r, Ok(resp) if resp.status().is_success());
                    if !ok {
                        failures.fetch_add(1, Ordering::Relaxed);
                        if let Ok(resp) = r {
                            eprintln!("{}: {}", resp.status(), resp.text().unwrap_or_default());
                        }
                    }
                    let _ = local.record(t.elapsed().as_micros() as u64);
                }
                if let Ok(mut h) = hist.lock() {
                    let _ = h.add(&local);
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.join();
    }
    let secs = t0.elapsed().as_secs_f64();
    let h = hist.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    println!(
        "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {} |",
        cli.format,
        cli.batch.summaries,
        cli.batch.sources,
        cli.concurrency,
        cli.batch.summaries as f64 / secs,
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        failures.load(Ordering::Relaxed)
    );
    Ok(())
}
