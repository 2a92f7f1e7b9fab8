//! `darkscope-aggregator`: the thin binary around the aggregator library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use darkscope_aggregator::api::{self, AppState};
use darkscope_aggregator::auth;
use darkscope_aggregator::config::Config;
use darkscope_aggregator::metrics::Metrics;
use darkscope_aggregator::store::sqlite::SqliteStore;
use darkscope_aggregator::store::Store;
use std::path::PathBuf;
use std::sync::Arc;

/// darkscope aggregator: receives sensor summaries, stores them (SQLite),
/// answers queries over HTTP.
///
/// Examples:
///   darkscope-aggregator serve
///   darkscope-aggregator sensor add --id jp-01 --country JP > jp-01.token
///   darkscope-aggregator sensor list
///   darkscope-aggregator sensor revoke jp-01
///   darkscope-aggregator analyst add --name alice > alice.token
#[derive(Parser, Debug)]
#[command(version, verbatim_doc_comment)]
struct Cli {
    /// TOML configuration (see deploy/aggregator.example.toml).
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// SQLite database file [default: ./darkscope.db].
    #[arg(long, global = true)]
    database: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP service (ingest, query API, metrics).
    Serve {
        /// Listen address [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
    },
    /// Manage sensor credentials.
    #[command(subcommand)]
    Sensor(SensorCmd),
    /// Manage analyst credentials (query API and console).
    #[command(subcommand)]
    Analyst(AnalystCmd),
    /// Manage feed subscribers (ISPs receiving their own scanning hosts).
    #[command(subcommand)]
    Subscriber(SubscriberCmd),
}

#[derive(Subcommand, Debug)]
enum SubscriberCmd {
    /// Register a subscriber owning prefixes; prints its token once (stored hashed).
    Add {
        /// Subscriber id.
        #[arg(long)]
        id: String,
        /// Prefixes it owns (repeat or comma-separate), IPv4 or IPv6.
        #[arg(long = "prefix", required = true, value_delimiter = ',')]
        prefixes: Vec<String>,
    },
    /// List subscribers.
    List,
    /// Revoke a subscriber's token.
    Revoke {
        /// Subscriber id.
        id: String,
    },
}

#[derive(Subcommand, Debug)]
enum AnalystCmd {
    /// Register an analyst and print a new token (shown once; stored hashed).
    Add {
        /// Analyst name (letters, digits, '.', '_', '-', '@').
        #[arg(long)]
        name: String,
    },
    /// List analysts.
    List,
    /// Revoke an analyst's token.
    Revoke {
        /// Analyst name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
enum SensorCmd {
    /// Register a sensor and print its new token (shown once; stored hashed).
    Add {
        /// Sensor id (letters, digits, '.', '_', '-').
        #[arg(long)]
        id: String,
        /// ISO 3166-1 alpha-2 country of its blocks.
        #[arg(long)]
        country: String,
    },
    /// List sensors.
    List,
    /// Revoke a sensor's token: its uploads are refused from now on.
    Revoke {
        /// Sensor id.
        id: String,
    },
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    if let Err(e) = real_main() {
        eprintln!("darkscope-aggregator: error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let mut cfg = match &cli.config {
        Some(p) => Config::from_file(p)?,
        None => Config::default(),
    };
    if let Some(d) = &cli.database {
        cfg.database = d.clone();
    }
    if let Command::Serve { listen: Some(l) } = &cli.command {
        cfg.listen = l.clone();
    }
    cfg.validate()?;
    let store = Arc::new(SqliteStore::open(&cfg.database)?);
    match cli.command {
        Command::Serve { .. } => serve(cfg, store),
        Command::Sensor(SensorCmd::Add { id, country }) => {
            let ok_id = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            anyhow::ensure!(
                ok_id,
                "sensor id '{id}' must be 1-64 letters, digits, '.', '_' or '-'"
            );
            let country = country.to_ascii_uppercase();
            anyhow::ensure!(
                country.len() == 2 && country.chars().all(|c| c.is_ascii_uppercase()),
                "country '{country}' must be an ISO 3166-1 alpha-2 code, e.g. JP"
            );
            let token = auth::new_token();
            store.add_sensor(&id, &country, &auth::token_hash(&token))?;
            eprintln!("sensor '{id}' ({country}) registered; its token follows (shown once, keep it secret):");
            println!("{token}");
            Ok(())
        }
        Command::Sensor(SensorCmd::List) => {
            println!("{:<24} {:<7} {:<22} revoked", "id", "country", "created");
            for s in store.sensors()? {
                let revoked = s
                    .revoked
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<7} {:<22} {revoked}",
                    s.id,
                    s.country,
                    s.created.to_string()
                );
            }
            Ok(())
        }
        Command::Subscriber(SubscriberCmd::Add { id, prefixes }) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            anyhow::ensure!(
                ok,
                "subscriber id '{id}' must be 1-64 letters, digits, '.', '_' or '-'"
            );
            darkscope_aggregator::feeds::Owners::build([(id.as_str(), &prefixes[..])])?;
            let token = auth::new_token();
            store.add_subscriber(&id, &prefixes, &auth::token_hash(&token))?;
            eprintln!("subscriber '{id}' ({}) registered; its token follows (shown once, keep it secret):", prefixes.join(", "));
            println!("{token}");
            Ok(())
        }
        Command::Subscriber(SubscriberCmd::List) => {
            println!("{:<24} {:<28} {:<12} prefixes", "id", "created", "revoked");
            for s in store.subscribers()? {
                let revoked = s
                    .revoked
                    .map(|t| t.to_string()[..10].to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<28} {:<12} {}",
                    s.id,
                    s.created.to_string(),
                    revoked,
                    s.prefixes.join(",")
                );
            }
            Ok(())
        }
        Command::Subscriber(SubscriberCmd::Revoke { id }) => {
            store.revoke_subscriber(&id)?;
            eprintln!("subscriber '{id}' revoked");
            Ok(())
        }
        Command::Analyst(AnalystCmd::Add { name }) => {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c));
            anyhow::ensure!(
                ok,
                "analyst name '{name}' must be 1-64 letters, digits, '.', '_', '-' or '@'"
            );
            let token = auth::new_token();
            store.add_analyst(&name, &auth::token_hash(&token))?;
            eprintln!(
                "analyst '{name}' registered; the token follows (shown once, keep it secret):"
            );
            println!("{token}");
            Ok(())
        }
        Command::Analyst(AnalystCmd::List) => {
            println!("{:<32} {:<28} revoked", "name", "created");
            for a in store.analysts()? {
                let revoked = a
                    .revoked
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "-".into());
                println!("{:<32} {:<28} {revoked}", a.name, a.created.to_string());
            }
            Ok(())
        }
        Command::Analyst(AnalystCmd::Revoke { name }) => {
            store.revoke_analyst(&name)?;
            eprintln!("analyst '{name}' revoked");
            Ok(())
        }
        Command::Sensor(SensorCmd::Revoke { id }) => {
            store.revoke_sensor(&id)?;
            eprintln!("sensor '{id}' revoked");
            Ok(())
        }
    }
}

fn serve(cfg: Config, store: Arc<SqliteStore>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        log::info!(
            "listening on http://{} (database {}); API description at /api/v1/openapi.json",
            listener.local_addr()?,
            cfg.database.display()
        );
        let state = AppState {
            store: store as Arc<dyn Store>,
            max_body: cfg.max_body(),
            metrics: Arc::new(Metrics::default()),
            query_auth: cfg.query_auth,
            alert_events: tokio::sync::broadcast::channel(256).0,
        };
        let shutdown = async {
            let ctrl_c = tokio::signal::ctrl_c();
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("installing the SIGTERM handler");
            tokio::select! { _ = ctrl_c => {}, _ = term.recv() => {} }
            log::info!("shutting down");
        };
        let bg = api::Background {
            retention: cfg.retention(),
            interval: std::time::Duration::from_secs(cfg.detect_interval_secs),
            detector: darkscope_aggregator::detect::Detector::new(cfg.detect),
            webhooks: cfg.load_webhooks()?,
        };
        if !bg.webhooks.is_empty() {
            log::info!("alerts go to {} webhook(s)", bg.webhooks.len());
        }
        api::serve(listener, state, bg, shutdown).await?;
        Ok(())
    })
}
