//! `darkscope-query-bench`: fills a store (SQLite, or ClickHouse with
//! `--clickhouse URL`) with `--days` of summaries from `--sensors` sensors,
//! rolls up, then times, as the API handlers call the store: `ports/top`
//! and a port's series over the whole span, a series of the last day in
//! 5-minute steps, and a port's reach (sensors and countries that see it,
//! the port page).

use anyhow::Result;
use clap::Parser;
use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::{PortFilter, Store, StoreError};
use darkscope_benches::synth;
use darkscope_common::{Proto, Timestamp};
use hdrhistogram::Histogram;
use std::time::Instant;

/// Query latency over a long span.
#[derive(Parser, Debug)]
#[command(version)]
struct Cli {
    /// SQLite database file, or with --clickhouse the ClickHouse database
    /// name (filled unless it already holds data).
    #[arg(long)]
    db: std::path::PathBuf,
    /// Benchmark ClickHouse at this HTTP URL instead of SQLite.
    #[arg(long)]
    clickhouse: Option<String>,
    /// Days of data.
    #[arg(long, default_value_t = 30)]
    days: u64,
    /// Sensors.
    #[arg(long, default_value_t = 50)]
    sensors: usize,
    /// Window length in minutes.
    #[arg(long, default_value_t = 10)]
    window_min: u64,
    /// Port rows per summary.
    #[arg(long, default_value_t = 50)]
    ports: usize,
    /// Source rows per summary.
    #[arg(long, default_value_t = 10)]
    sources: usize,
    /// Queries of each kind to time.
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// Threads inserting at once (like concurrent uploads; the store
    /// batches what they queue, so more threads make larger batches).
    #[arg(long, default_value_t = 8)]
    threads: u64,
}

const T0: u64 = 1_763_683_200_000_000; // 2025-11-21T00:00:00Z

fn main() -> Result<()> {
    let cli = Cli::parse();
    let store: Box<dyn Store> = match &cli.clickhouse {
        None => Box::new(SqliteStore::open(&cli.db)?),
        Some(url) => {
            let cfg = darkscope_aggregator::store::clickhouse::ClickHouseConfig {
                url: url.clone(),
                database: cli.db.display().to_string(),
                timeout_secs: 3600,
                ..Default::default()
            };
            darkscope_aggregator::store::clickhouse::ClickHouseStore::migrate(&cfg)?;
            Box::new(darkscope_aggregator::store::clickhouse::ClickHouseStore::open(&cfg)?)
        }
    };
    let windows = cli.days * 24 * 60 / cli.window_min;
    let wlen = cli.window_min * 60_000_000;
    // An existing database from an earlier run is reused as it is.
    let reuse = !store.sensors()?.is_empty();
    if reuse {
        eprintln!("reusing the data in {}", cli.db.display());
    }
    for s in (0..cli.sensors).filter(|_| !reuse) {
        store.add_sensor(&format!("q-{s:02}"), "JP", format!("h{s}").as_bytes())?;
    }
    let t = Instant::now();
    // Several inserting threads, like concurrent uploads (group commit).
    std::thread::scope(|sc| {
        for part in (0..cli.threads.max(1)).filter(|_| !reuse) {
            let store = store.as_ref();
            let cli = &cli;
            sc.spawn(move || {
                for w in (part..windows).step_by(cli.threads.max(1) as usize) {
                    for s in 0..cli.sensors {
                        let sum = synth::summary(
                            &format!("q-{s:02}"),
                            T0 + w * wlen,
                            cli.sources,
                            cli.ports,
                            w * 1000 + s as u64,
                        );
                        let mut sum = sum;
                        sum.window.end = darkscope_common::Timestamp(T0 + (w + 1) * wlen);
                        store.insert_summary(&sum, "JP").expect("insert");
                    }
                }
            });
        }
    });
    let n = windows * cli.sensors as u64;
    eprintln!(
        "inserted {n} summaries in {:.1?} ({:.0}/s)",
        t.elapsed(),
        n as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let hours = store.rollup(Timestamp(T0 + cli.days * 86_400_000_000 + 3_600_000_000))?;
    eprintln!("rolled up {hours} hours in {:.1?}", t.elapsed());
    let span = PortFilter {
        from: Timestamp(T0),
        to: Timestamp(T0 + cli.days * 86_400_000_000),
        ..Default::default()
    };
    let mut top = Histogram::<u64>::new(3)?;
    let mut series = Histogram::<u64>::new(3)?;
    let mut recent = Histogram::<u64>::new(3)?;
    let mut reach = Histogram::<u64>::new(3)?;
    // Runs one query, recording its latency in `h`.
    fn timed<T>(
        h: &mut Histogram<u64>,
        q: impl FnOnce() -> std::result::Result<T, StoreError>,
    ) -> Result<T> {
        let t = Instant::now();
        let r = q()?;
        h.record(t.elapsed().as_micros() as u64)?;
        Ok(r)
    }
    for i in 0..cli.queries {
        let port = (i % cli.ports) as u16;
        let r = timed(&mut top, || store.top_ports(&span, 20))?;
        assert!(!r.is_empty());
        let hourly = || {
            store.port_series(
                Proto::Tcp,
                port,
                span.from,
                span.to,
                3_600_000_000,
                Default::default(),
            )
        };
        assert_eq!(timed(&mut series, hourly)?.len() as u64, cli.days * 24);
        // What a dashboard shows: the last day in 5-minute steps.
        let last_day = Timestamp(span.to.0 - 86_400_000_000);
        let recent_q = || {
            store.port_series(
                Proto::Tcp,
                port,
                last_day,
                span.to,
                300_000_000,
                Default::default(),
            )
        };
        assert_eq!(timed(&mut recent, recent_q)?.len(), 288);
        // The port page: which sensors and countries see the port.
        let r = timed(&mut reach, || {
            store.port_reach(Proto::Tcp, port, span.from, span.to, Default::default())
        })?;
        assert!(!r.sensors.is_empty());
    }
    for (name, h) in [
        ("ports/top over the whole span", &top),
        ("series of one port, 1 h steps, whole span", &series),
        ("series of one port, 5 min steps, last day", &recent),
        ("sensors and countries of one port, whole span", &reach),
    ] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | {:.1} |",
            h.len(),
            h.value_at_quantile(0.5) as f64 / 1000.0,
            h.value_at_quantile(0.99) as f64 / 1000.0,
            h.max() as f64 / 1000.0
        );
    }
    Ok(())
}
