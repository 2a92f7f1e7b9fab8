//! `darkscope-ingest-stages`: the aggregator's ingest cost per summary,
//! stage by stage and in-process (no HTTP): decompression and parsing of the
//! JSON and binary forms, then the SQLite store's write path alone, with the
//! writer thread's CPU time per summary.

use anyhow::{Context, Result};
use clap::Parser;
use darkscope_aggregator::ingest;
use darkscope_aggregator::store::{sqlite::SqliteStore, Store};
use darkscope_benches::synth;
use darkscope_common::wire::Summary;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Measure ingest stages on synthetic summaries.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// From 50 sensors, consecutive 1-minute windows.
    #[command(flatten)]
    batch: synth::Batch,
    /// Threads storing at once (the writer batches what they queue).
    #[arg(long, default_value_t = 16)]
    threads: usize,
    /// Folder for the SQLite file (emptied first).
    #[arg(long, default_value = "benches/out/stages")]
    dir: PathBuf,
}

/// CPU seconds (user + system) of this process's thread named `name`.
fn thread_cpu(name: &str) -> Option<f64> {
    let tick = 100.0; // USER_HZ on Linux
    for e in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let f: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
        let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
        return Some((u + s) / tick);
    }
    None
}

fn per_summary_ms(t: Instant, n: usize) -> f64 {
    t.elapsed().as_secs_f64() * 1e3 / n as f64
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let n = cli.batch.summaries;
    eprintln!("building {n} summaries of {} sources…", cli.batch.sources);
    let ids: Vec<String> = (0..50).map(|i| format!("bench-{i:02}")).collect();
    let sums: Vec<Summary> = (0..n).map(|i| cli.batch.summary(&ids, i)).collect();
    let json: Vec<Vec<u8>> = sums
        .iter()
        .map(|s| zstd::encode_all(&serde_json::to_vec(s).expect("json")[..], 3).expect("zstd"))
        .collect();
    let binary: Vec<Vec<u8>> = sums
        .iter()
        .map(|s| zstd::encode_all(&s.to_binary().expect("binary")[..], 3).expect("zstd"))
        .collect();
    let mean = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() / v.len() / 1024;
    println!("| stage | per summary |");
    println!("|---|---:|");
    println!(
        "| body, JSON / binary (zstd) | {} / {} KiB |",
        mean(&json),
        mean(&binary)
    );
    for (form, bodies, media) in [
        ("JSON", &json, None),
        (
            "binary",
            &binary,
            Some(darkscope_common::wire::BINARY_MEDIA_TYPE),
        ),
    ] {
        let t = Instant::now();
        for b in bodies.iter() {
            let raw = ingest::decode_body(Some("zstd"), b, 16 << 20)?;
            std::hint::black_box(ingest::parse_as(media, &raw)?);
        }
        println!(
            "| zstd + parse + validate, {form} | {:.3} ms |",
            per_summary_ms(t, n)
        );
    }
    let _ = std::fs::remove_dir_all(&cli.dir);
    std::fs::create_dir_all(&cli.dir).with_context(|| format!("creating {}", cli.dir.display()))?;
    let store = Arc::new(SqliteStore::open(&cli.dir.join("stages.db"))?);
    for id in &ids {
        store.add_sensor(id, "JP", format!("token-{id}").as_bytes())?;
    }
    let sums = Arc::new(sums);
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let workers: Vec<_> = (0..cli.threads)
        .map(|_| {
            let (store, sums, next) = (store.clone(), sums.clone(), next.clone());
            std::thread::spawn(move || -> Result<()> {
                while let Some(s) = sums.get(next.fetch_add(1, Ordering::Relaxed)) {
                    store.insert_summary_with(s, "JP", &[])?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a store thread panicked"))??;
    }
    let secs = t.elapsed().as_secs_f64();
    let writer = thread_cpu("sqlite-writer").unwrap_or(f64::NAN);
    println!(
        "| store ({} threads): summaries/s, writer CPU | {:.0}/s, {:.3} ms |",
        cli.threads,
        n as f64 / secs,
        writer * 1e3 / n as f64
    );
    drop(store); // the last connection to close checkpoints the WAL
    let db = std::fs::metadata(cli.dir.join("stages.db"))?.len();
    println!(
        "| database bytes | {:.1} KiB |",
        db as f64 / n as f64 / 1024.0
    );
    Ok(())
}
