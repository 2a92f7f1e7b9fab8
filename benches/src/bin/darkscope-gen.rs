//! `darkscope-gen`: writes an IBR-like capture and its ground truth.

use anyhow::{Context, Result};
use clap::Parser;
use darkscope_benches::gen::{generate, spoofed_flood, GenConfig, DARKNET};
use std::path::PathBuf;

/// Generate a seeded Internet-background-radiation-like pcap for the darknet
/// 198.19.0.0/16 + 2001:db8:dead::/48, with its ground truth as JSON.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Output pcap.
    #[arg(long, short = 'o')]
    out: PathBuf,
    /// Ground truth JSON (skipped if not given; costs memory on large files).
    #[arg(long)]
    truth: Option<PathBuf>,
    /// Frames to write.
    #[arg(long, default_value_t = 1_000_000)]
    packets: u64,
    /// Distinct sources in the population.
    #[arg(long, default_value_t = 200_000)]
    sources: u32,
    /// Seconds the capture spans.
    #[arg(long, default_value_t = 300)]
    duration: u64,
    /// RNG seed.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Instead: N one-packet SYNs from N distinct spoofed sources in one second.
    #[arg(long)]
    spoofed: Option<u32>,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let t0 = std::time::Instant::now();
    if let Some(n) = cli.spoofed {
        spoofed_flood(&cli.out, n, GenConfig::default().start_secs)
            .with_context(|| format!("writing {}", cli.out.display()))?;
        eprintln!(
            "wrote {n} spoofed SYNs to {} in {:.1?}",
            cli.out.display(),
            t0.elapsed()
        );
        return Ok(());
    }
    let cfg = GenConfig {
        packets: cli.packets,
        sources: cli.sources,
        seed: cli.seed,
        duration_secs: cli.duration,
        truth: cli.truth.is_some(),
        ..Default::default()
    };
    let truth =
        generate(&cfg, &cli.out).with_context(|| format!("writing {}", cli.out.display()))?;
    if let Some(p) = &cli.truth {
        std::fs::write(p, serde_json::to_vec_pretty(&truth)?)
            .with_context(|| format!("writing {}", p.display()))?;
    }
    eprintln!(
        "wrote {} frames to {} (darknet {DARKNET}) in {:.1?}",
        cli.packets,
        cli.out.display(),
        t0.elapsed()
    );
    Ok(())
}
