//! `darkscope-detect-eval`: the surge detector on labelled scenarios:
//! detection, delay from onset, false alarms per 1,000 port-days.

use clap::Parser;
use darkscope_aggregator::detect::DetectConfig;
use darkscope_benches::scenarios::{all, evaluate};

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
}

fn main() {
    let cli = Cli::parse();
    let mut cfg = DetectConfig::default();
    cfg.h = cli.h.unwrap_or(cfg.h);
    cfg.k = cli.k.unwrap_or(cfg.k);
    cfg.alpha = cli.alpha.unwrap_or(cfg.alpha);
    cfg.min_ratio = cli.min_ratio.unwrap_or(cfg.min_ratio);
    eprintln!("{cfg:?}");
    let mut rows: Vec<(String, usize, usize, Vec<usize>, usize, f64)> = Vec::new();
    for run in 0..cli.runs {
        for (i, s) in all(cli.days, run * 1000 + 1).iter().enumerate() {
            let o = evaluate(s, &cfg);
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
