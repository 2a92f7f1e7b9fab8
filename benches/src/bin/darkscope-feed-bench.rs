//! `darkscope-feed-bench`: the cost of matching summaries' sources against
//! feed subscriptions at ingest, with many subscription prefixes.
//!
//! Without `--register`: builds the prefix tries from `--prefixes` random
//! subscription prefixes (IPv4 /20-/24 with nested /28 "customers", and
//! IPv6 /32-/48) spread over `--subscribers` subscribers, then matches
//! synthetic summaries (uniformly random IPv4 sources, as background
//! radiation looks) and reports build time, ns per source and the share
//! of sources matched. With `--register DB`: writes the same subscriptions
//! into a SQLite database, for an end-to-end ingest run (benches/feeds.sh).

use anyhow::Result;
use clap::Parser;
use darkscope_aggregator::feeds::Owners;
use darkscope_aggregator::store::{sqlite::SqliteStore, Store, SubscriberRecord};
use darkscope_benches::synth;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::time::Instant;

/// Measure feed matching with many subscription prefixes.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// Subscription prefixes in all.
    #[arg(long, default_value_t = 100_000)]
    prefixes: usize,
    /// Subscribers they are spread over.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Summaries of 1,000 sources to match.
    #[arg(long, default_value_t = 500)]
    summaries: usize,
    /// Write the subscriptions into this SQLite database instead.
    #[arg(long)]
    register: Option<PathBuf>,
    /// With `--register`: write each subscriber's token to `DIR/<id>.token`.
    #[arg(long)]
    tokens_out: Option<PathBuf>,
}

/// The subscriptions: each subscriber gets its share of the prefixes.
fn subscriptions(n: usize, subscribers: usize) -> Vec<SubscriberRecord> {
    let mut rng = SmallRng::seed_from_u64(7);
    let mut subs: Vec<SubscriberRecord> = (0..subscribers)
        .map(|i| SubscriberRecord {
            id: format!("isp-{i:04}"),
            ..Default::default()
        })
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut made = 0;
    while made < n {
        let p = match rng.gen_range(0..100) {
            // IPv6 allocations.
            0..=9 => {
                let len = rng.gen_range(32..=48);
                let a = std::net::Ipv6Addr::from(
                    0x2001_0000_0000_0000_0000_0000_0000_0000u128 | (rng.gen::<u128>() >> 16),
                );
                format!(
                    "{}",
                    ipnet::Ipv6Net::new(a, len)
                        .expect("len 32-48 is a valid IPv6 prefix length")
                        .trunc()
                )
            }
            // A customer block nested in an ISP's.
            10..=14 => {
                let a = std::net::Ipv4Addr::from(rng.gen::<u32>());
                format!(
                    "{}",
                    ipnet::Ipv4Net::new(a, 28)
                        .expect("28 is a valid IPv4 prefix length")
                        .trunc()
                )
            }
            _ => {
                let len = rng.gen_range(20..=24);
                let a = std::net::Ipv4Addr::from(rng.gen::<u32>());
                format!(
                    "{}",
                    ipnet::Ipv4Net::new(a, len)
                        .expect("len 20-24 is a valid IPv4 prefix length")
                        .trunc()
                )
            }
        };
        if seen.insert(p.clone()) {
            subs[made % subscribers].prefixes.push(p);
            made += 1;
        }
    }
    subs
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let subs = subscriptions(cli.prefixes, cli.subscribers.max(1));
    if let Some(db) = &cli.register {
        let store = SqliteStore::open(db)?;
        if let Some(d) = &cli.tokens_out {
            std::fs::create_dir_all(d)?;
        }
        for s in &subs {
            let token = darkscope_aggregator::auth::new_token();
            store.add_subscriber(s, &darkscope_aggregator::auth::token_hash(&token))?;
            if let Some(d) = &cli.tokens_out {
                std::fs::write(d.join(format!("{}.token", s.id)), &token)?;
            }
        }
        eprintln!(
            "registered {} subscribers with {} prefixes in {}",
            subs.len(),
            cli.prefixes,
            db.display()
        );
        return Ok(());
    }
    let t = Instant::now();
    let owners = Owners::build(&subs, None)?;
    let build = t.elapsed();
    let summaries: Vec<_> = (0..cli.summaries)
        .map(|i| synth::summary("bench", 1_763_683_200_000_000, 1000, 100, i as u64))
        .collect();
    let big = synth::summary("bench", 1_763_683_200_000_000, 200_000, 1000, 99_999);
    let t = Instant::now();
    let mut matched = 0usize;
    for s in &summaries {
        matched += owners.matches(s).len();
    }
    let small = t.elapsed();
    let t = Instant::now();
    let big_matched = owners.matches(&big).len();
    let big_time = t.elapsed();
    let sources = cli.summaries * 1000;
    println!("| prefixes | subscribers | trie build ms | ns/source (1k-source summaries) | 1k-source summaries/s per core | ns/source (200k-source summary) | sources matched |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} % |",
        owners.prefixes(),
        subs.len(),
        build.as_secs_f64() * 1e3,
        small.as_nanos() as f64 / sources as f64,
        cli.summaries as f64 / small.as_secs_f64(),
        big_time.as_nanos() as f64 / 200_000.0,
        100.0 * (matched + big_matched) as f64 / (sources + 200_000) as f64,
    );
    Ok(())
}
