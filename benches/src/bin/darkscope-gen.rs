//! `darkscope-gen`: writes an IBR-like capture and its ground truth.

use anyhow::{Context, Result};
use clap::Parser;
use darkscope_benches::gen::{generate, spoofed_flood, GenConfig, Surge, DARKNET};
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
    /// Add a labelled scanning surge: `PORT,FROM,TO,SHARE[,SOURCES]` = from
    /// FROM to TO seconds after the start, SHARE (0-1) of the frames come
    /// from a ZMap-like campaign of SOURCES (default 10,000) fresh addresses
    /// probing tcp/PORT.
    #[arg(long, value_parser = parse_surge)]
    surge: Option<Surge>,
    /// Instead: N one-packet SYNs from N distinct spoofed sources in one second.
    #[arg(long)]
    spoofed: Option<u32>,
}

fn parse_surge(v: &str) -> Result<Surge, String> {
    let f: Vec<&str> = v.split(',').map(str::trim).collect();
    let bad = || format!("'{v}': expected PORT,FROM,TO,SHARE[,SOURCES]");
    if !(4..=5).contains(&f.len()) {
        return Err(bad());
    }
    let s = Surge {
        port: f[0].parse().map_err(|_| bad())?,
        from_secs: f[1].parse().map_err(|_| bad())?,
        to_secs: f[2].parse().map_err(|_| bad())?,
        share: f[3].parse().map_err(|_| bad())?,
        sources: f
            .get(4)
            .map_or(Ok(10_000), |x| x.parse())
            .map_err(|_| bad())?,
    };
    if s.from_secs >= s.to_secs || !(0.0..=1.0).contains(&s.share) || s.sources == 0 {
        return Err(format!(
            "'{v}': need FROM < TO, 0 <= SHARE <= 1, SOURCES >= 1"
        ));
    }
    Ok(s)
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
        surge: cli.surge,
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
