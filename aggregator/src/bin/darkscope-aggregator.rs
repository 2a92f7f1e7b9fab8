//! `darkscope-aggregator`: the thin binary around the aggregator library.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use darkscope_aggregator::api::{self, AppState};
use darkscope_aggregator::auth;
use darkscope_aggregator::config::Config;
use darkscope_aggregator::config::Storage;
use darkscope_aggregator::federation;
use darkscope_aggregator::metrics::Metrics;
use darkscope_aggregator::store::clickhouse::ClickHouseStore;
use darkscope_aggregator::store::{self, Store};
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
///   darkscope-aggregator federation keygen --avoid 198.19.0.0/16 > /etc/darkscope/federation.key
///   darkscope-aggregator federation pull --peer th
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
    /// Sharing with peer aggregators: keys, peer tokens, pulls, audit.
    #[command(subcommand)]
    Federation(FederationCmd),
    /// Create or upgrade the ClickHouse schema (storage = "clickhouse");
    /// applies the migrations in deploy/clickhouse/ that are missing.
    Migrate,
}

#[derive(Subcommand, Debug)]
enum FederationCmd {
    /// Print a new 32-byte secret (hex) for [federation] key_file: it keys
    /// sensor pseudonyms and Crypto-PAn. Generate it once and keep it.
    Keygen {
        /// Monitored blocks (comma-separated CIDRs) that must not come out
        /// of Crypto-PAn unchanged: about 1 key in 150 leaves a /16 as it
        /// was, and such keys are skipped.
        #[arg(long, value_delimiter = ',')]
        avoid: Vec<darkscope_common::Prefix>,
    },
    /// Make a token for a peer to present to us: the token goes to the peer
    /// (stdout), its SHA-256 goes into our config as inbound_token_sha256.
    Token {
        /// Peer id (as in [[federation.peers]]).
        #[arg(long)]
        peer: String,
    },
    /// Pull now from every peer with a url (or one), as the server does on
    /// its interval; prints what was imported.
    Pull {
        /// Only this peer.
        #[arg(long)]
        peer: Option<String>,
    },
    /// Sync state of every peer: cursor, last success, lag, last error.
    Status,
    /// The export audit log: every change document served to a peer.
    Audit {
        /// Only this peer.
        #[arg(long)]
        peer: Option<String>,
        /// Only exports at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum SubscriberCmd {
    /// Register a subscriber owning prefixes and/or ASNs; prints its token
    /// once (stored hashed). The key that signs its webhook digests is
    /// SHA-256("darkscope feed webhook\0" + token).
    Add {
        /// Subscriber id.
        #[arg(long)]
        id: String,
        /// Prefixes it owns (repeat or comma-separate), IPv4 or IPv6.
        #[arg(long = "prefix", value_delimiter = ',')]
        prefixes: Vec<String>,
        /// AS numbers it owns (repeat or comma-separate); used when
        /// [feeds] asn_table is configured. A matching prefix wins over an AS.
        #[arg(long = "asn", value_delimiter = ',')]
        asns: Vec<u32>,
        /// URL that receives HMAC-signed digests of its new events.
        #[arg(long)]
        webhook: Option<String>,
    },
    /// Change a subscriber's prefixes, ASNs or webhook (its token stays).
    /// Ownership applies to data arriving from then on.
    Update {
        /// Subscriber id.
        id: String,
        /// Replace its prefixes with these.
        #[arg(long = "prefix", value_delimiter = ',')]
        prefixes: Option<Vec<String>>,
        /// Replace its AS numbers with these (`--asn ''` clears them).
        #[arg(long = "asn", value_delimiter = ',')]
        asns: Option<Vec<String>>,
        /// Set its webhook URL.
        #[arg(long, conflicts_with = "no_webhook")]
        webhook: Option<String>,
        /// Remove its webhook.
        #[arg(long)]
        no_webhook: bool,
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

/// Refuses a subscription that does not parse, claims what another
/// subscriber owns, or has a webhook that is not an http(s) URL.
fn check_subscription(
    store: &dyn Store,
    sub: &store::SubscriberRecord,
    cfg: &Config,
) -> Result<()> {
    let mut all: Vec<_> = store
        .subscribers()?
        .into_iter()
        .filter(|s| s.id != sub.id)
        .collect();
    all.push(sub.clone());
    darkscope_aggregator::feeds::Owners::build(&all, None)?;
    if let Some(w) = &sub.webhook {
        let u = reqwest::Url::parse(w).with_context(|| format!("webhook '{w}' is not a URL"))?;
        anyhow::ensure!(
            matches!(u.scheme(), "http" | "https"),
            "webhook '{w}' must be an http:// or https:// URL"
        );
    }
    if !sub.asns.is_empty() && cfg.feeds.asn_table.is_none() {
        log::warn!(
            "subscriber '{}' owns ASNs, but no [feeds] asn_table is configured: they match nothing until one is",
            sub.id
        );
    }
    Ok(())
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
    // Commands that need no database.
    match &cli.command {
        Command::Federation(FederationCmd::Keygen { avoid }) => {
            let random = std::iter::repeat_with(|| {
                let mut k = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut k);
                k
            });
            let k = federation::key_avoiding(avoid, random.take(10_000))
                .context("no key out of 10,000 leaves those blocks anonymised")?;
            eprintln!("new federation key (keep it secret; put it in the file named by [federation] key_file):");
            println!("{}", federation::hex(&k));
            return Ok(());
        }
        Command::Federation(FederationCmd::Token { peer }) => {
            let token = auth::new_token();
            eprintln!(
                "token for peer '{peer}' follows on stdout: send it to them over a secure channel."
            );
            eprintln!("put this in our config under that peer:");
            eprintln!(
                "  inbound_token_sha256 = \"{}\"",
                federation::hex(&auth::token_hash(&token))
            );
            println!("{token}");
            return Ok(());
        }
        _ => {}
    }
    if let Command::Migrate = &cli.command {
        anyhow::ensure!(
            cfg.storage == Storage::Clickhouse,
            "migrate is for storage = \"clickhouse\" (SQLite upgrades itself on open)"
        );
        let done = ClickHouseStore::migrate(&cfg.clickhouse)?;
        let store = ClickHouseStore::open(&cfg.clickhouse)?;
        eprintln!(
            "ClickHouse {} at {}: database '{}' {}",
            store.server_version()?,
            cfg.clickhouse.url,
            cfg.clickhouse.database,
            if done.is_empty() {
                "was already current".to_string()
            } else {
                format!("migrated (applied {done:?})")
            }
        );
        return Ok(());
    }
    let store = cfg.open_store()?;
    match cli.command {
        Command::Migrate => Ok(()),
        Command::Serve { .. } => serve(cfg, store),
        Command::Federation(cmd) => federation_cmd(cfg, store, cmd),
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
        Command::Subscriber(SubscriberCmd::Add {
            id,
            prefixes,
            asns,
            webhook,
        }) => {
            let ok = !id.is_empty()
                && id.len() <= 64
                && id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
            anyhow::ensure!(
                ok,
                "subscriber id '{id}' must be 1-64 letters, digits, '.', '_' or '-'"
            );
            anyhow::ensure!(
                !prefixes.is_empty() || !asns.is_empty(),
                "a subscriber owns at least one --prefix or --asn"
            );
            let token = auth::new_token();
            let sub = store::SubscriberRecord {
                id: id.clone(),
                prefixes,
                asns,
                webhook,
                webhook_key: darkscope_aggregator::feeds::webhook_key(&token),
                ..Default::default()
            };
            check_subscription(store.as_ref(), &sub, &cfg)?;
            store.add_subscriber(&sub, &auth::token_hash(&token))?;
            eprintln!(
                "subscriber '{id}' ({}) registered; its token follows (shown once, keep it secret):",
                sub.resources()
            );
            println!("{token}");
            Ok(())
        }
        Command::Subscriber(SubscriberCmd::Update {
            id,
            prefixes,
            asns,
            webhook,
            no_webhook,
        }) => {
            let mut sub = store
                .subscribers()?
                .into_iter()
                .find(|s| s.id == id)
                .ok_or_else(|| anyhow::anyhow!("no subscriber '{id}'"))?;
            anyhow::ensure!(sub.revoked.is_none(), "subscriber '{id}' is revoked");
            if let Some(p) = prefixes {
                sub.prefixes = p.into_iter().filter(|p| !p.is_empty()).collect();
            }
            if let Some(a) = asns {
                sub.asns = a
                    .iter()
                    .filter(|a| !a.is_empty())
                    .map(|a| {
                        a.trim_start_matches("AS")
                            .parse()
                            .with_context(|| format!("'{a}' is not an AS number"))
                    })
                    .collect::<Result<_>>()?;
            }
            if webhook.is_some() {
                anyhow::ensure!(
                    !sub.webhook_key.is_empty(),
                    "subscriber '{id}' was registered before webhooks existed: revoke it and add it again to get a token that keys them"
                );
                sub.webhook = webhook;
            }
            if no_webhook {
                sub.webhook = None;
            }
            anyhow::ensure!(
                !sub.prefixes.is_empty() || !sub.asns.is_empty(),
                "a subscriber owns at least one prefix or ASN"
            );
            check_subscription(store.as_ref(), &sub, &cfg)?;
            store.update_subscriber(&sub)?;
            eprintln!(
                "subscriber '{id}' now owns {}{}; applies to data arriving from now on",
                sub.resources(),
                sub.webhook
                    .as_deref()
                    .map(|w| format!(", webhook {w}"))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Subscriber(SubscriberCmd::List) => {
            println!(
                "{:<24} {:<28} {:<12} {:<8} prefixes and ASNs",
                "id", "created", "revoked", "webhook"
            );
            for s in store.subscribers()? {
                let revoked = s
                    .revoked
                    .map(|t| t.to_string()[..10].to_string())
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{:<24} {:<28} {:<12} {:<8} {}",
                    s.id,
                    s.created.to_string(),
                    revoked,
                    if s.webhook.is_some() { "yes" } else { "-" },
                    s.resources()
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

fn federation_cmd(cfg: Config, store: Arc<dyn Store>, cmd: FederationCmd) -> Result<()> {
    match cmd {
        FederationCmd::Keygen { .. } | FederationCmd::Token { .. } => Ok(()),
        FederationCmd::Pull { peer } => {
            let fed = &cfg.federation;
            anyhow::ensure!(fed.enabled(), "no [[federation.peers]] in the config");
            let peers: Vec<_> = fed
                .peers
                .iter()
                .filter(|p| p.url.is_some() && peer.as_ref().is_none_or(|id| *id == p.id))
                .collect();
            anyhow::ensure!(
                !peers.is_empty(),
                "no peer with a url{}",
                peer.map(|p| format!(" named '{p}'")).unwrap_or_default()
            );
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                let mut failed = 0;
                for p in peers {
                    let client = federation::peer_client(p)?;
                    match federation::pull_once(store.clone(), &client, fed, p, 10_000).await {
                        Ok(r) => println!(
                            "{}: {} observations imported ({} replaced earlier versions) in {} requests; cursor {}",
                            p.id, r.imported, r.replaced, r.requests, r.cursor
                        ),
                        Err(e) => {
                            failed += 1;
                            eprintln!("{}: pull failed: {e}", p.id);
                        }
                    }
                }
                anyhow::ensure!(failed == 0, "{failed} pull(s) failed; nothing of theirs was stored");
                Ok(())
            })
        }
        FederationCmd::Status => {
            let states = store.peer_states()?;
            println!(
                "{:<12} {:>10} {:<22} {:>10} {:>8} last error",
                "peer", "cursor", "last success", "imported", "errors"
            );
            for p in &cfg.federation.peers {
                let s = states
                    .iter()
                    .find(|s| s.peer == p.id)
                    .cloned()
                    .unwrap_or_default();
                println!(
                    "{:<12} {:>10} {:<22} {:>10} {:>8} {}",
                    p.id,
                    s.cursor,
                    s.last_success
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    s.imported,
                    s.errors,
                    s.last_error
                );
            }
            Ok(())
        }
        FederationCmd::Audit { peer, since } => {
            let since = match since {
                Some(s) => darkscope_common::Timestamp::parse_rfc3339(&s).map_err(|_| {
                    anyhow::anyhow!("--since must be RFC 3339, e.g. 2026-11-01T00:00:00Z")
                })?,
                None => darkscope_common::Timestamp(0),
            };
            println!(
                "{:<28} {:<10} {:<20} {:<13} {:>10} {:>10} {:>8} {:>10} {:>10}",
                "time", "peer", "policy", "tlp", "from", "to", "obs", "port rows", "src rows"
            );
            for e in store.exports(since, peer.as_deref())? {
                println!(
                    "{:<28} {:<10} {:<20} {:<13} {:>10} {:>10} {:>8} {:>10} {:>10}",
                    e.time.to_string(),
                    e.peer,
                    e.share,
                    e.tlp,
                    e.cursor_from,
                    e.cursor_to,
                    e.observations,
                    e.port_rows,
                    e.source_rows
                );
            }
            Ok(())
        }
    }
}

fn serve(cfg: Config, store: Arc<dyn Store>) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}", cfg.listen))?;
        log::info!(
            "listening on {}://{} ({}); API description at /api/v1/openapi.json",
            if cfg.tls_cert.is_some() {
                "https"
            } else {
                "http"
            },
            listener.local_addr()?,
            match cfg.storage {
                Storage::Sqlite => format!("SQLite {}", cfg.database.display()),
                Storage::Clickhouse => format!(
                    "ClickHouse {} database {}",
                    cfg.clickhouse.url, cfg.clickhouse.database
                ),
            }
        );
        let fed = federation::Federation::load(&cfg.federation)?.map(Arc::new);
        let metrics = Arc::new(Metrics::default());
        let leadership = Arc::new(darkscope_aggregator::cluster::Leadership::new(
            std::time::Duration::from_secs(cfg.detect_interval_secs),
        ));
        log::info!("replica id {}", leadership.id());
        if let Some(f) = &fed {
            log::info!(
                "federation '{}': {} peer(s); pulling from {} every {} s",
                f.cfg.id,
                f.cfg.peers.len(),
                f.cfg.peers.iter().filter(|p| p.url.is_some()).count(),
                f.cfg.pull_interval_secs
            );
            if f.cfg.peers.iter().any(|p| p.url.is_some()) {
                tokio::spawn(federation::run_puller(
                    store.clone(),
                    f.cfg.clone(),
                    metrics.clone(),
                    leadership.clone(),
                ));
            }
        }
        let feeds = Arc::new(
            darkscope_aggregator::feeds::FeedState::new(cfg.feeds.clone(), cfg.tls_cert.is_some())
                .context("loading [feeds] asn_table")?,
        );
        tokio::spawn(darkscope_aggregator::feeds::run_pusher(
            store.clone(),
            feeds.clone(),
            metrics.clone(),
            leadership.clone(),
        ));
        let asn_table = feeds.table.clone();
        let state = AppState {
            feeds,
            limits: Arc::new(darkscope_aggregator::limits::Limits::new(
                cfg.limits.clone(),
            )),
            leadership,
            federation: fed,
            store,
            max_body: cfg.max_body(),
            metrics,
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
            detector: darkscope_aggregator::detect::Detector::new(cfg.detect)
                .with_enrichment(asn_table),
            webhooks: cfg.load_webhooks()?,
            tls: cfg.tls()?,
        };
        if bg.tls.is_some() {
            log::info!(
                "TLS on the listener{}",
                if cfg.tls_client_ca.is_some() {
                    ", client certificates required"
                } else {
                    ""
                }
            );
        }
        if !bg.webhooks.is_empty() {
            log::info!("alerts go to {} webhook(s)", bg.webhooks.len());
        }
        api::serve(listener, state, bg, shutdown).await?;
        Ok(())
    })
}
