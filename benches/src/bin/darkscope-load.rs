//! `darkscope-load`: many sensors, analysts and feed subscribers against one
//! aggregator at once, for a bounded number of simulated minutes.
//!
//! Each simulated minute every sensor uploads one window (zstd summary of
//! `--sources` sources); meanwhile analysts query the API (top ports, a
//! port's series, overview, a source's history) and subscribers poll their
//! JSON change feeds. Reports sustained ingest, p50/p99/p99.9 latency per
//! kind of request (hdrhistogram), the aggregator's peak RSS (from
//! /proc/PID/status), how late the last upload of each minute finished, and
//! loss: windows and packets sent vs what the aggregator says it stored.

use anyhow::{bail, Context, Result};
use clap::Parser;
use darkscope_benches::synth;
use hdrhistogram::Histogram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Load an aggregator like a national sensor network would.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Aggregator base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Directory with one `<sensor-id>.token` file per sensor.
    #[arg(long)]
    tokens: PathBuf,
    /// Directory with one `<subscriber>.token` file per feed subscriber.
    #[arg(long)]
    subscriber_tokens: Option<PathBuf>,
    /// Simulated minutes (one window per sensor each).
    #[arg(long, default_value_t = 10)]
    minutes: u64,
    /// Real seconds per simulated minute (0: as fast as the aggregator takes them).
    #[arg(long, default_value_t = 6.0)]
    minute_secs: f64,
    /// Source rows per summary.
    #[arg(long, default_value_t = 300)]
    sources: usize,
    /// Port rows per summary.
    #[arg(long, default_value_t = 50)]
    ports: usize,
    /// Concurrent uploads.
    #[arg(long, default_value_t = 32)]
    uploaders: usize,
    /// Analysts querying in a loop.
    #[arg(long, default_value_t = 2)]
    analysts: usize,
    /// Each sensor uploads a fixed random 0 to this many simulated seconds
    /// after its window closes, as sensors do with their default
    /// `splay_secs` (5); 0 sends every sensor's window at the same moment.
    #[arg(long, default_value_t = 5.0)]
    splay: f64,
    /// Aggregator process id, for its memory.
    #[arg(long)]
    pid: Option<u32>,
}

/// One upload: sensor index, window index.
type Job = (usize, u64);

const MIN: u64 = 60_000_000;

fn tokens(dir: &Path) -> Result<Vec<(String, String)>> {
    darkscope_benches::read_tokens(dir).with_context(|| format!("reading {}", dir.display()))
}

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("3 significant digits is valid")
}

/// (anonymous, file-backed) resident KiB of a process: heap and stacks vs
/// mapped database pages (clean, reclaimable).
fn rss_kib(pid: u32) -> Option<(u64, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| -> Option<u64> {
        s.lines()
            .find_map(|l| l.strip_prefix(name))?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    };
    Some((
        field("RssAnon:")?,
        field("RssFile:")? + field("RssShmem:").unwrap_or(0),
    ))
}

fn row(name: &str, h: &Histogram<u64>, failures: u64) -> String {
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    format!(
        "| {name} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {failures} |",
        h.len(),
        ms(0.5),
        ms(0.99),
        ms(0.999),
        h.max() as f64 / 1000.0
    )
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let sensors = Arc::new(tokens(&cli.tokens)?);
    if sensors.is_empty() {
        bail!("no *.token files in {}", cli.tokens.display());
    }
    let subscribers = match &cli.subscriber_tokens {
        Some(d) => tokens(d)?,
        None => Vec::new(),
    };
    let base = cli.url.trim_end_matches('/').to_string();
    // Windows start at the current minute, as live sensors' would.
    let now = darkscope_common::Timestamp::now().0;
    let t_zero = now - now % MIN;
    let stop = Arc::new(AtomicBool::new(false));
    let sent_packets = Arc::new(AtomicU64::new(0));

    // Uploaders take (sensor, window) jobs; each builds its summary (a
    // sensor's window is built where it is sent, as a sensor would).
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    let ingest = Arc::new(Mutex::new(hist()));
    let ingest_failures = Arc::new(AtomicU64::new(0));
    let done_at: Arc<Mutex<Vec<Instant>>> = Arc::new(Mutex::new(Vec::new()));
    let uploaders: Vec<_> = (0..cli.uploaders)
        .map(|_| {
            let (rx, sensors, ingest, fails, sent, done_at) = (
                rx.clone(),
                sensors.clone(),
                ingest.clone(),
                ingest_failures.clone(),
                sent_packets.clone(),
                done_at.clone(),
            );
            let url = format!("{base}/api/v1/summaries");
            let (sources, ports) = (cli.sources, cli.ports);
            std::thread::spawn(move || {
                let client = reqwest::blocking::Client::new();
                let mut local = hist();
                loop {
                    let job = rx.lock().ok().and_then(|r| r.recv().ok());
                    let Some((s, w)) = job else { break };
                    let sum = synth::summary(
                        &sensors[s].0,
                        t_zero + w * MIN,
                        sources,
                        ports,
                        w * 100_000 + s as u64,
                    );
                    let json = serde_json::to_vec(&sum).expect("summaries serialise");
                    let body = zstd::encode_all(&json[..], 3).expect("zstd in memory");
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .bearer_auth(&sensors[s].1)
                        .header("Content-Encoding", "zstd")
                        .header("Content-Type", "application/json")
                        .body(body)
                        .send();
                    let _ = local.record(t.elapsed().as_micros() as u64);
                    if matches!(&r, Ok(resp) if resp.status().is_success()) {
                        sent.fetch_add(sum.totals.packets, Ordering::Relaxed);
                    } else {
                        fails.fetch_add(1, Ordering::Relaxed);
                    }
                    if let Ok(mut d) = done_at.lock() {
                        d.push(Instant::now());
                    }
                }
                if let Ok(mut h) = ingest.lock() {
                    let _ = h.add(&local);
                }
            })
        })
        .collect();

    // Analysts and subscribers, until the uploads are done.
    let queries = Arc::new(Mutex::new(hist()));
    let feeds = Arc::new(Mutex::new(hist()));
    let read_failures = Arc::new(AtomicU64::new(0));
    let feed_failures = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for a in 0..cli.analysts {
        let (stop, h, fails, base) = (
            stop.clone(),
            queries.clone(),
            read_failures.clone(),
            base.clone(),
        );
        let minutes = cli.minutes;
        readers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut local = hist();
            let mut i = a as u64;
            let range = format!(
                "from={}&to={}",
                darkscope_common::Timestamp(t_zero),
                darkscope_common::Timestamp(t_zero + minutes.max(1) * MIN)
            );
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let path = match i % 4 {
                    0 => format!("/api/v1/ports/top?{range}"),
                    1 => format!("/api/v1/ports/tcp/{}/series?{range}", i % 50),
                    2 => format!("/api/v1/overview?{range}"),
                    _ => format!(
                        "/api/v1/sources/{}",
                        std::net::Ipv4Addr::from((i * 2_654_435_761) as u32)
                    ),
                };
                let t = Instant::now();
                let r = client.get(format!("{base}{path}")).send();
                let _ = local.record(t.elapsed().as_micros() as u64);
                if !matches!(&r, Ok(resp) if resp.status().is_success() || resp.status() == 404) {
                    fails.fetch_add(1, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if let Ok(mut g) = h.lock() {
                let _ = g.add(&local);
            }
        }));
    }
    for (_, token) in subscribers.clone() {
        let (stop, h, fails, base) = (
            stop.clone(),
            feeds.clone(),
            feed_failures.clone(),
            base.clone(),
        );
        readers.push(std::thread::spawn(move || {
            let client = reqwest::blocking::Client::new();
            let mut local = hist();
            let mut q = "since=2000-01-01T00:00:00Z".to_string();
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                let r = client
                    .get(format!("{base}/api/v1/feeds/events.json?{q}&limit=500"))
                    .bearer_auth(&token)
                    .send();
                let _ = local.record(t.elapsed().as_micros() as u64);
                match r
                    .ok()
                    .filter(|r| r.status().is_success())
                    .and_then(|r| r.bytes().ok())
                    .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                {
                    Some(v) => {
                        if let Some(n) = v["next"].as_str() {
                            q = format!("cursor={n}");
                        }
                        if v["more"] != true {
                            std::thread::sleep(Duration::from_millis(500));
                        }
                    }
                    None => {
                        fails.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if let Ok(mut g) = h.lock() {
                let _ = g.add(&local);
            }
        }));
    }
    let rss_stop = stop.clone();
    let pid = cli.pid;
    let sampler = std::thread::spawn(move || {
        let (mut anon, mut file) = (0, 0);
        while !rss_stop.load(Ordering::Relaxed) {
            if let Some((a, f)) = pid.and_then(rss_kib) {
                anon = anon.max(a);
                file = file.max(f);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        (anon, file)
    });

    // The clock: one window per sensor per simulated minute, each sensor
    // at its own offset into the splay.
    let scale = cli.minute_secs / 60.0;
    let mut order: Vec<(f64, usize)> = {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        (0..sensors.len())
            .map(|s| (rng.gen::<f64>() * cli.splay * scale, s))
            .collect()
    };
    order.sort_by(|a, b| a.0.total_cmp(&b.0));
    let t0 = Instant::now();
    let mut minute_ends = Vec::new();
    for w in 0..cli.minutes {
        let at = t0 + Duration::from_secs_f64(cli.minute_secs * w as f64);
        if let Some(d) = at.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        for &(offset, s) in &order {
            let due = at + Duration::from_secs_f64(offset);
            if let Some(d) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(d);
            }
            tx.send((s, w)).context("uploaders gone")?;
        }
        minute_ends.push(at + Duration::from_secs_f64(cli.minute_secs));
    }
    drop(tx);
    for u in uploaders {
        let _ = u.join();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        let _ = r.join();
    }
    let (rss_anon, rss_file) = sampler.join().unwrap_or((0, 0));

    // How late the last upload of each simulated minute finished.
    let per_minute = sensors.len();
    let done = done_at.lock().map_err(|_| anyhow::anyhow!("lock"))?;
    let mut worst_lag = 0.0f64;
    for (m, end) in minute_ends.iter().enumerate() {
        if let Some(last) = done.get((m + 1) * per_minute - 1) {
            worst_lag = worst_lag.max(last.saturating_duration_since(*end).as_secs_f64());
        }
    }

    // Loss: what the aggregator says it stored over the simulated range.
    let o: serde_json::Value = serde_json::from_slice(
        &reqwest::blocking::get(format!(
            "{base}/api/v1/overview?from={}&to={}",
            darkscope_common::Timestamp(t_zero),
            darkscope_common::Timestamp(t_zero + cli.minutes.max(1) * MIN)
        ))?
        .bytes()?,
    )?;
    let sent_windows = cli.minutes * sensors.len() as u64 - ingest_failures.load(Ordering::Relaxed);
    let stored_windows = o["windows"].as_u64().unwrap_or(0);
    let stored_packets = o["packets"].as_u64().unwrap_or(0);
    let sent = sent_packets.load(Ordering::Relaxed);

    let total = cli.minutes * sensors.len() as u64;
    println!(
        "{} sensors × {} simulated minutes ({} s each, uploads splayed over {} simulated s), {} sources per summary, {} uploaders, {} analysts, {} subscribers",
        sensors.len(),
        cli.minutes,
        cli.minute_secs,
        cli.splay,
        cli.sources,
        cli.uploaders,
        cli.analysts,
        subscribers.len()
    );
    println!(
        "sustained ingest: {:.0} summaries/s over {:.1} s; last upload of a minute at most {:.1} s after the minute ended",
        total as f64 / elapsed,
        elapsed,
        worst_lag,
    );
    println!(
        "aggregator peak memory: {} MiB anonymous (heap, stacks), {} MiB file-backed (mapped database pages, reclaimable)",
        rss_anon / 1024,
        rss_file / 1024
    );
    println!(
        "loss: windows acknowledged {sent_windows}, stored {stored_windows}; packets acknowledged {sent}, stored {stored_packets}"
    );
    println!();
    println!("| requests | count | p50 ms | p99 ms | p99.9 ms | max ms | failures |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let g = |m: &Arc<Mutex<Histogram<u64>>>| m.lock().map(|h| h.clone()).unwrap_or_else(|_| hist());
    println!(
        "{}",
        row(
            "sensor uploads",
            &g(&ingest),
            ingest_failures.load(Ordering::Relaxed)
        )
    );
    println!(
        "{}",
        row(
            "analyst queries",
            &g(&queries),
            read_failures.load(Ordering::Relaxed)
        )
    );
    println!(
        "{}",
        row(
            "subscriber feed polls",
            &g(&feeds),
            feed_failures.load(Ordering::Relaxed)
        )
    );
    if stored_windows != sent_windows || stored_packets != sent {
        bail!("loss: the aggregator stored less (or more) than it acknowledged");
    }
    Ok(())
}
