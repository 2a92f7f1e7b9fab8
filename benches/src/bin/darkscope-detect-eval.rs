//! `darkscope-detect-eval`: the surge detector on labelled scenarios:
//! detection, delay from onset, false alarms per 1,000 port-days.

use clap::Parser;
use darkscope_aggregator::detect::DetectConfig;
use darkscope_benches::scenarios::{all, evaluate, evaluate_dshield, evaluate_through_store};

/// Evaluate the detector over labelled scenarios.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Days of 1-minute windows per scenario.
    #[arg(long, default_value_t = 14)]
    days: usize,
    /// Repetitions with different seeds (onsets).
    #[arg(long, default_value_t = 10)]
    runs: u64,
    /// Number of the first run (runs differ by seed), to continue or split
    /// a long evaluation.
    #[arg(long, default_value_t = 0)]
    first_run: u64,
    /// Override the CUSUM threshold.
    #[arg(long)]
    h: Option<f64>,
    /// Override the CUSUM slack.
    #[arg(long)]
    k: Option<f64>,
    /// Override the baseline weight.
    #[arg(long)]
    alpha: Option<f64>,
    /// Override the minimum ratio to the baseline.
    #[arg(long)]
    min_ratio: Option<f64>,
    /// Also run DShield's port trend score on the same scenarios, with its
    /// threshold set to the lowest that raises no false alarm on the
    /// scenarios without a surge, and print both side by side.
    #[arg(long)]
    dshield: bool,
    /// Run every scenario through the aggregator's real path instead:
    /// per-sensor summaries stored in a SQLite file in this folder (one per
    /// scenario, removed after), the aggregator's detector loop reading the
    /// merged sketches back. Slower: put the folder on tmpfs (/dev/shm).
    #[arg(long, value_name = "DIR")]
    store: Option<std::path::PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if cli.dshield {
        return compare(&cli);
    }
    let mut cfg = DetectConfig::default();
    cfg.h = cli.h.unwrap_or(cfg.h);
    cfg.k = cli.k.unwrap_or(cfg.k);
    cfg.alpha = cli.alpha.unwrap_or(cfg.alpha);
    cfg.min_ratio = cli.min_ratio.unwrap_or(cfg.min_ratio);
    eprintln!("{cfg:?}");
    let mut rows: Vec<(String, usize, usize, Vec<usize>, usize, f64)> = Vec::new();
    for run in cli.first_run..cli.first_run + cli.runs {
        for (i, s) in all(cli.days, run * 1000 + 1).iter().enumerate() {
            let o = match &cli.store {
                None => evaluate(s, &cfg),
                Some(dir) => {
                    let db = dir.join(format!("detect-eval-{run}-{i}.db"));
                    eprintln!("run {run}: {} through {}…", s.name, db.display());
                    let o = evaluate_through_store(s, &cfg, &db, run).unwrap_or_else(|e| {
                        eprintln!("error: {e}");
                        std::process::exit(1)
                    });
                    for ext in ["", "-wal", "-shm"] {
                        let _ = std::fs::remove_file(format!("{}{ext}", db.display()));
                    }
                    eprintln!(
                        "run {run}: {}: delay {:?}, false alarms {}",
                        s.name, o.delay, o.false_alarms
                    );
                    o
                }
            };
            if rows.len() <= i {
                rows.push((s.name.clone(), 0, 0, Vec::new(), 0, 0.0));
            }
            let r = &mut rows[i];
            if s.surge.is_some() {
                r.1 += 1;
                if let Some(d) = o.delay {
                    r.2 += 1;
                    r.3.push(d);
                }
            }
            r.4 += o.false_alarms;
            r.5 += o.port_days;
        }
    }
    println!("| scenario | surges detected | median delay (windows) | worst delay | false alarms | per 1,000 port-days |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, n, found, mut delays, fa, pd) in rows {
        delays.sort_unstable();
        let med = delays
            .get(delays.len() / 2)
            .map_or("–".into(), |d| d.to_string());
        let worst = delays.last().map_or("–".into(), |d| d.to_string());
        let det = if n == 0 {
            "–".to_string()
        } else {
            format!("{found}/{n}")
        };
        println!(
            "| {name} | {det} | {med} | {worst} | {fa} | {:.2} |",
            fa as f64 * 1000.0 / pd
        );
    }
}

/// Ours vs DShield's trend score, same scenarios, DShield at the lowest
/// threshold with no false alarm where there is no surge.
fn compare(cli: &Cli) {
    let cfg = DetectConfig::default();
    let sets: Vec<Vec<darkscope_benches::scenarios::Scenario>> = (cli.first_run
        ..cli.first_run + cli.runs)
        .map(|run| all(cli.days, run * 1000 + 1))
        .collect();
    let quiet = |theta: f64| {
        sets.iter()
            .flatten()
            .filter(|s| s.is_quiet())
            .all(|s| evaluate_dshield(s, theta).false_alarms == 0)
    };
    let mut theta = 1.0;
    while !quiet(theta) && theta < 1e6 {
        theta *= 1.1;
    }
    println!("DShield threshold with no false alarm on the scenarios without a surge: {theta:.1}");
    println!();
    println!("| scenario | ours: detected | ours: median / worst delay | ours: false alarms | DShield: detected | DShield: median / worst delay | DShield: false alarms |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let names: Vec<String> = sets[0].iter().map(|s| s.name.clone()).collect();
    for (i, name) in names.iter().enumerate() {
        let mut row = Vec::new();
        for dshield in [false, true] {
            let (mut n, mut found, mut delays, mut fa) = (0, 0, Vec::new(), 0);
            for set in &sets {
                let s = &set[i];
                let o = if dshield {
                    evaluate_dshield(s, theta)
                } else {
                    evaluate(s, &cfg)
                };
                if s.surge.is_some() {
                    n += 1;
                    if let Some(d) = o.delay {
                        found += 1;
                        delays.push(d);
                    }
                }
                fa += o.false_alarms;
            }
            delays.sort_unstable();
            let med = delays
                .get(delays.len() / 2)
                .map_or("–".into(), |d: &usize| d.to_string());
            let worst = delays.last().map_or("–".into(), |d| d.to_string());
            let det = if n == 0 {
                "–".to_string()
            } else {
                format!("{found}/{n}")
            };
            row.push(format!("{det} | {med} / {worst} | {fa}"));
        }
        println!("| {name} | {} | {} |", row[0], row[1]);
    }
}
