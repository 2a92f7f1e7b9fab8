//! `darkscope-sensor`: the thin binary around the sensor library.

use anyhow::{bail, Context, Result};
use clap::Parser;
use darkscope_sensor::config::Config;
use darkscope_sensor::export::{JsonLines, Tee};
use darkscope_sensor::metrics::{self, Metrics};
use darkscope_sensor::upload::{Spool, SpoolSink, UploadTarget, Uploader};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Darknet sensor: summarises traffic to unused address blocks, one JSON
/// summary per window (ports, sources, classes, fingerprints, capture health).
///
/// Examples:
///   darkscope-sensor --read scan.pcap --darknet 198.19.0.0/16 --out summaries.jsonl
///   darkscope-sensor --interface eth1 --darknet 198.19.0.0/16 --id jp-01 --country JP --out -
///   darkscope-sensor --interface eth1 --darknet 198.19.0.0/16 --id jp-01 --country JP \
///       --aggregator https://aggregator.example:8080 --token-file jp-01.token --spool /var/lib/darkscope/spool
///   darkscope-sensor --config /etc/darkscope/sensor.toml
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// TOML configuration (see deploy/sensor.example.toml); flags override it.
    #[arg(long, short = 'c')]
    config: Option<PathBuf>,
    /// Process a pcap or pcapng file ("-" for stdin) as fast as possible;
    /// windows are cut by packet timestamps.
    #[arg(long, short = 'r', conflicts_with = "interface")]
    read: Option<PathBuf>,
    /// Capture live on this interface (root or CAP_NET_RAW); windows are cut by the wall clock.
    #[arg(long, short = 'i')]
    interface: Option<String>,
    /// Monitored darknet prefixes, comma-separated (e.g. 198.19.0.0/16,2001:db8:dead::/48).
    #[arg(long, short = 'd', value_delimiter = ',')]
    darknet: Vec<String>,
    /// Source prefixes to leave out of all statistics (known research
    /// scanners), comma-separated; their packets are counted as `excluded`.
    #[arg(long, value_delimiter = ',')]
    exclude: Vec<String>,
    /// Sensor id written into every summary.
    #[arg(long)]
    id: Option<String>,
    /// ISO 3166-1 alpha-2 country of the monitored blocks.
    #[arg(long)]
    country: Option<String>,
    /// Window length in seconds [default: 60].
    #[arg(long, short = 'w')]
    window: Option<u64>,
    /// Write summaries here, one JSON per line ("-" for stdout) [default:
    /// stdout]. Live capture appends (a restart keeps the file); reading a
    /// capture file replaces it.
    #[arg(long, short = 'o')]
    out: Option<PathBuf>,
    /// BPF filter for live capture.
    #[arg(long)]
    bpf: Option<String>,
    /// Bytes captured per packet (live) [default: 192].
    #[arg(long)]
    snaplen: Option<i32>,
    /// Kernel capture buffer in MiB (live) [default: 64].
    #[arg(long)]
    buffer_mib: Option<i32>,
    /// Once the capture is open, switch to this user (every capability is
    /// dropped in any case).
    #[arg(long)]
    user: Option<String>,
    /// Statistics threads [default: cores - 1].
    #[arg(long)]
    shards: Option<usize>,
    /// Sources tracked exactly per window [default: 1000000].
    #[arg(long)]
    source_cap: Option<usize>,
    /// Serve Prometheus metrics on HOST:PORT (e.g. 127.0.0.1:9108).
    #[arg(long)]
    metrics_listen: Option<String>,
    /// Push each summary to this aggregator (e.g. http://127.0.0.1:8080), via
    /// the spool; comma-separate several replicas to fail over between them.
    #[arg(long)]
    aggregator: Option<String>,
    /// PEM CA to trust for the aggregator's certificate (a private CA).
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// PEM client certificate, for an aggregator that requires mutual TLS.
    #[arg(long, requires = "client_key")]
    client_cert: Option<PathBuf>,
    /// PEM private key of --client-cert.
    #[arg(long, requires = "client_cert")]
    client_key: Option<PathBuf>,
    /// File with this sensor's token (from `darkscope-aggregator sensor add`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Spool directory for summaries awaiting upload [default: ./spool].
    #[arg(long)]
    spool: Option<PathBuf>,
    /// At exit, seconds to keep uploading what is spooled [default: 30].
    #[arg(long)]
    drain_secs: Option<u64>,
    /// Live capture: each window waits a random 0 to this many seconds
    /// before its upload, so sensors closing windows on the same minute do
    /// not upload in one burst; 0 uploads at once [default: 5].
    #[arg(long)]
    splay_secs: Option<u64>,
    /// Form of uploaded summaries: binary (compact; an aggregator that
    /// refuses it gets JSON instead) or json [default: binary].
    #[arg(long, value_name = "binary|json")]
    upload_format: Option<darkscope_sensor::upload::WireFormat>,
    /// Never draw a progress bar.
    #[arg(long)]
    no_progress: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    match real_main() {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("darkscope-sensor: error: {e:#}");
            std::process::exit(1);
        }
    }
}

fn real_main() -> Result<i32> {
    let cli = Cli::parse();
    let mut cfg = match &cli.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if cli.read.is_some() {
        cfg.capture.read = cli.read.clone();
        cfg.capture.interface = None;
    }
    if cli.interface.is_some() {
        cfg.capture.interface = cli.interface.clone();
        cfg.capture.read = None;
    }
    if !cli.darknet.is_empty() {
        cfg.sensor.darknet = cli.darknet.clone();
    }
    if !cli.exclude.is_empty() {
        cfg.sensor.exclude = cli.exclude.clone();
    }
    macro_rules! set {
        ($flag:expr => $field:expr) => {
            if let Some(v) = $flag.clone() {
                $field = v;
            }
        };
    }
    set!(cli.id => cfg.sensor.id);
    set!(cli.country => cfg.sensor.country);
    set!(cli.window => cfg.pipeline.window_secs);
    set!(cli.bpf => cfg.capture.bpf);
    set!(cli.snaplen => cfg.capture.snaplen);
    set!(cli.buffer_mib => cfg.capture.buffer_mib);
    if cli.user.is_some() {
        cfg.capture.user = cli.user.clone();
    }
    set!(cli.shards => cfg.pipeline.shards);
    set!(cli.source_cap => cfg.pipeline.source_cap);
    if cli.out.is_some() {
        cfg.output.out = cli.out.clone();
    }
    if cli.metrics_listen.is_some() {
        cfg.output.metrics_listen = cli.metrics_listen.clone();
    }
    if cli.ca_file.is_some() {
        cfg.upload.ca_file = cli.ca_file.clone();
    }
    if cli.client_cert.is_some() {
        cfg.upload.client_cert = cli.client_cert.clone();
        cfg.upload.client_key = cli.client_key.clone();
    }
    if cli.aggregator.is_some() {
        cfg.upload.aggregator = cli.aggregator.clone();
    }
    if cli.token_file.is_some() {
        cfg.upload.token_file = cli.token_file.clone();
    }
    set!(cli.spool => cfg.upload.spool_dir);
    set!(cli.drain_secs => cfg.upload.drain_secs);
    set!(cli.splay_secs => cfg.upload.splay_secs);
    set!(cli.upload_format => cfg.upload.format);
    let v = cfg.validate()?;
    let mut sinks: Vec<Box<dyn darkscope_sensor::export::Sink>> = Vec::new();
    let uploader = match &v.upload {
        Some(u) => {
            let token = UploadTarget::token_from_file(&u.token_file)?;
            let spool = Arc::new(Spool::open(&u.spool_dir, u.cap_bytes, u.format)?);
            let left = spool.pending().len();
            if left > 0 {
                log::info!(
                    "{left} summaries left in {} from an earlier run: uploading them first",
                    u.spool_dir.display()
                );
            }
            sinks.push(Box::new(SpoolSink::new(spool.clone())));
            let read = |p: &std::path::Path| {
                std::fs::read(p).with_context(|| format!("cannot read '{}'", p.display()))
            };
            let ca_pem = u.ca_file.as_deref().map(read).transpose()?;
            let identity_pem = match &u.client_identity {
                Some((cert, key)) => {
                    let mut pem = read(cert)?;
                    pem.push(b'\n');
                    pem.extend(read(key)?);
                    Some(pem)
                }
                None => None,
            };
            let target = UploadTarget {
                urls: u.urls.clone(),
                token,
                timeout: u.timeout,
                ca_pem,
                identity_pem,
                // Reading a file is not on the clock: upload as fast as it goes.
                splay: if matches!(v.source, darkscope_sensor::capture::SourceSpec::Live(_)) {
                    u.splay
                } else {
                    std::time::Duration::ZERO
                },
            };
            log::info!(
                "uploading to {} (spool {})",
                u.urls.join(" or "),
                u.spool_dir.display()
            );
            Some((spool, target, u.drain, u.spool_dir.clone()))
        }
        None => None,
    };
    // Secrets are read; open the input, then give up every privilege before
    // any other thread starts (capabilities are per thread; new threads inherit none).
    let cap = darkscope_sensor::capture::Capture::open(&v.source)?;
    let spool_dir: Vec<&std::path::Path> = uploader.iter().map(|u| u.3.as_path()).collect();
    let dropped = darkscope_sensor::privileges::drop_all(v.user.as_deref(), &spool_dir)?;
    if !dropped.had.is_empty() || dropped.user.is_some() {
        log::info!(
            "capture open; dropped all {} capabilities{}",
            dropped.had.len(),
            dropped
                .user
                .as_deref()
                .map_or(String::new(), |u| format!(", now running as {u}"))
        );
    }

    let uploader = match uploader {
        Some((spool, target, drain, dir)) => Some((Uploader::start(spool, target)?, drain, dir)),
        None => None,
    };
    // Summaries go to --out, or to stdout when nothing else takes them.
    let out = match (&v.out, &uploader) {
        (Some(p), _) => Some(p.clone()),
        (None, None) => Some(PathBuf::from("-")),
        (None, Some(_)) => None,
    };
    if let Some(p) = &out {
        // Live capture appends across restarts; a capture file replaces.
        let live = matches!(&v.source, darkscope_sensor::capture::SourceSpec::Live(_));
        sinks.push(Box::new(JsonLines::create(p, live)?));
    }
    let sink = Tee(sinks);
    let metrics = Arc::new(Metrics::default());
    if let Some(addr) = &v.metrics_listen {
        metrics::serve(addr, metrics.clone()).map_err(anyhow::Error::msg)?;
        log::info!("metrics on http://{addr}/metrics");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handler")?;
    }
    let is_file =
        matches!(&v.source, darkscope_sensor::capture::SourceSpec::File(p) if p.as_os_str() != "-");
    let progress = (is_file && !cli.no_progress && std::io::stderr().is_terminal()).then(|| {
        let pb = indicatif::ProgressBar::new(0);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, eta {eta})",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        pb
    });
    match &v.source {
        darkscope_sensor::capture::SourceSpec::Live(l) => log::info!(
            "capturing on {} for darknet {} (window {} s, {} shards)",
            l.interface,
            v.pipeline.darknet.to_strings().join(","),
            v.pipeline.window_us / 1_000_000,
            v.pipeline.shards
        ),
        darkscope_sensor::capture::SourceSpec::File(p) => {
            log::info!("reading {} ({} shards)", p.display(), v.pipeline.shards)
        }
    }
    let t0 = std::time::Instant::now();
    let report =
        darkscope_sensor::run_capture(cap, &v, Box::new(sink), metrics, stop, progress.clone())?;
    if let Some(pb) = progress {
        pb.finish_and_clear();
    }
    let secs = t0.elapsed().as_secs_f64();
    log::info!(
        "{} frames ({} to the darknet) in {:.2} s ({:.2} Mpps), {} summaries written to {}",
        report.frames,
        report.darknet,
        secs,
        report.frames as f64 / secs.max(1e-9) / 1e6,
        report.windows,
        out.as_deref()
            .map_or_else(|| "the spool".to_string(), |p| p.display().to_string())
    );
    if let Some((up, drain, dir)) = uploader {
        let n = up.uploaded.clone();
        let left = up.finish(drain);
        log::info!(
            "{} summaries uploaded",
            n.load(std::sync::atomic::Ordering::Relaxed)
        );
        if left > 0 {
            log::warn!("{left} summaries not yet acknowledged; they stay in {} and go out on the next start", dir.display());
        }
    }
    if let Some(e) = report.read_error {
        if report.frames == 0 {
            bail!("{e}");
        }
        eprintln!(
            "darkscope-sensor: warning: input ended early ({e}); the {} summaries of what was read were written",
            report.windows
        );
        return Ok(2);
    }
    Ok(0)
}
