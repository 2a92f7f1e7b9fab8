//! Aggregator configuration: TOML (see `deploy/aggregator.example.toml`) with
//! defaults for everything, validated at load time.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config '{0}': {1}")]
    Read(PathBuf, std::io::Error),
    /// Not valid TOML for this schema.
    #[error("config '{0}': {1}")]
    Parse(PathBuf, toml::de::Error),
    /// A value out of range.
    #[error("{0}")]
    Invalid(String),
}

/// The whole aggregator configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub listen: String,
    /// TLS for the listener: PEM certificate chain (with `tls_key`). Without
    /// it the listener speaks plain HTTP (fine on loopback or behind a
    /// TLS-terminating proxy).
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Mutual TLS: clients (sensors, peers, analysts' tools) must present a
    /// certificate signed by this PEM CA, on top of their bearer token.
    pub tls_client_ca: Option<PathBuf>,
    /// Where data lives: `sqlite` (one file, the default) or `clickhouse`.
    pub storage: Storage,
    /// SQLite database file.
    pub database: PathBuf,
    /// `[clickhouse]`, used when `storage = "clickhouse"`.
    pub clickhouse: crate::store::clickhouse::ClickHouseConfig,
    /// Largest accepted summary after decompression, MiB.
    pub max_body_mib: usize,
    /// Days raw windows are kept before retention deletes them.
    pub retention_days: u64,
    /// Days hourly roll-ups are kept.
    pub rollup_retention_days: u64,
    /// Who may read the query API and console without an analyst token.
    pub query_auth: QueryAuth,
    /// Seconds between detection runs (and roll-ups).
    pub detect_interval_secs: u64,
    /// Surge-detector tunables (see `detect` for each trade-off).
    pub detect: crate::detect::DetectConfig,
    /// Receivers of new alerts.
    pub webhooks: Vec<WebhookConfig>,
    /// Sharing with peer aggregators (off without peers).
    pub federation: crate::federation::FederationConfig,
    /// Rate, in-flight and time limits on every request.
    pub limits: crate::limits::LimitsConfig,
    /// Infection-alert feeds for subscribers (ASN table, STIX identity, TLP, push).
    pub feeds: crate::feeds::FeedsConfig,
}

/// `[[webhooks]]`: a receiver of alerts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// URL the alert JSON is POSTed to.
    pub url: String,
    /// File holding the shared secret used to sign each delivery.
    pub secret_file: PathBuf,
}

/// The storage backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// One SQLite file (embedded; the default).
    #[default]
    Sqlite,
    /// A ClickHouse server or cluster (scale-out; several aggregators may share it).
    Clickhouse,
}

/// Access to the query API and the console.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryAuth {
    /// Callers on the loopback interface need no token; everyone else needs
    /// an analyst token. The default, with the default loopback listener.
    #[default]
    LoopbackOpen,
    /// Every query needs an analyst token.
    Always,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:8080".into(),
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            storage: Storage::Sqlite,
            database: PathBuf::from("darkscope.db"),
            clickhouse: Default::default(),
            max_body_mib: 16,
            retention_days: 30,
            rollup_retention_days: 400,
            query_auth: QueryAuth::LoopbackOpen,
            detect_interval_secs: 60,
            detect: Default::default(),
            webhooks: Vec::new(),
            federation: Default::default(),
            limits: Default::default(),
            feeds: Default::default(),
        }
    }
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen.parse::<SocketAddr>().map_err(|_| {
            ConfigError::Invalid(format!(
                "listen '{}' is not HOST:PORT, e.g. 127.0.0.1:8080",
                self.listen
            ))
        })?;
        self.feeds.validate().map_err(ConfigError::Invalid)?;
        if !(1..=1024).contains(&self.max_body_mib) {
            return Err(ConfigError::Invalid("max_body_mib must be 1-1024".into()));
        }
        if !(1..=3650).contains(&self.retention_days) {
            return Err(ConfigError::Invalid("retention_days must be 1-3650".into()));
        }
        if !(1..=3600).contains(&self.detect_interval_secs) {
            return Err(ConfigError::Invalid(
                "detect_interval_secs must be 1-3600".into(),
            ));
        }
        for w in &self.webhooks {
            if !(w.url.starts_with("http://") || w.url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!(
                    "webhook url '{}' must be http:// or https://",
                    w.url
                )));
            }
        }
        self.limits.validate().map_err(ConfigError::Invalid)?;
        self.detect.validate().map_err(ConfigError::Invalid)?;
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid(
                "tls_cert and tls_key go together (PEM certificate chain and its key)".into(),
            ));
        }
        if self.tls_client_ca.is_some() && self.tls_cert.is_none() {
            return Err(ConfigError::Invalid(
                "tls_client_ca (mutual TLS) needs tls_cert and tls_key".into(),
            ));
        }
        if self.storage == Storage::Clickhouse {
            self.clickhouse.validate().map_err(ConfigError::Invalid)?;
        }
        self.federation
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if !(self.retention_days..=3650).contains(&self.rollup_retention_days) {
            return Err(ConfigError::Invalid(
                "rollup_retention_days must be at least retention_days and at most 3650".into(),
            ));
        }
        Ok(())
    }

    /// Reads each webhook's secret file.
    pub fn load_webhooks(&self) -> Result<Vec<crate::webhook::Webhook>, ConfigError> {
        self.webhooks
            .iter()
            .map(|w| {
                let secret = std::fs::read_to_string(&w.secret_file)
                    .map_err(|e| ConfigError::Read(w.secret_file.clone(), e))?;
                let secret = secret.trim();
                if secret.is_empty() {
                    return Err(ConfigError::Invalid(format!(
                        "webhook secret file '{}' is empty",
                        w.secret_file.display()
                    )));
                }
                Ok(crate::webhook::Webhook {
                    url: w.url.clone(),
                    secret: secret.as_bytes().to_vec(),
                })
            })
            .collect()
    }

    /// Retention periods for the server.
    pub fn retention(&self) -> crate::api::Retention {
        crate::api::Retention {
            raw: std::time::Duration::from_secs(self.retention_days * 86_400),
            rollups: std::time::Duration::from_secs(self.rollup_retention_days * 86_400),
        }
    }

    /// The TLS configuration of the listener, when `tls_cert` is set: the
    /// certificate chain and key, and client certificates required when
    /// `tls_client_ca` is set. Uses rustls with the ring provider.
    pub fn tls(&self) -> Result<Option<std::sync::Arc<rustls::ServerConfig>>, ConfigError> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) else {
            return Ok(None);
        };
        let bad = |p: &Path, e: &dyn std::fmt::Display| {
            ConfigError::Invalid(format!("TLS file '{}': {e}", p.display()))
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .map_err(|e| bad(cert, &e))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(cert, &e))?;
        if certs.is_empty() {
            return Err(bad(cert, &"no certificate in the file"));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, &e))?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Invalid(format!("TLS: {e}")))?;
        let builder = match &self.tls_client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in CertificateDer::pem_file_iter(ca).map_err(|e| bad(ca, &e))? {
                    roots
                        .add(c.map_err(|e| bad(ca, &e))?)
                        .map_err(|e| bad(ca, &e))?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    std::sync::Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| bad(ca, &e))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut cfg = builder
            .with_single_cert(certs, key_der)
            .map_err(|e| bad(key, &e))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(std::sync::Arc::new(cfg)))
    }

    /// Opens the configured storage backend.
    pub fn open_store(
        &self,
    ) -> Result<std::sync::Arc<dyn crate::store::Store>, crate::store::StoreError> {
        Ok(match self.storage {
            Storage::Sqlite => {
                std::sync::Arc::new(crate::store::sqlite::SqliteStore::open(&self.database)?)
            }
            Storage::Clickhouse => std::sync::Arc::new(
                crate::store::clickhouse::ClickHouseStore::open(&self.clickhouse)?,
            ),
        })
    }

    /// The body limit in bytes.
    pub fn max_body(&self) -> usize {
        self.max_body_mib << 20
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_example_are_valid() {
        Config::default().validate().unwrap();
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/aggregator.example.toml");
        Config::from_file(&p).unwrap().validate().unwrap();
    }

    #[test]
    fn bad_values_are_explained() {
        let c = Config {
            listen: "localhost".into(),
            ..Default::default()
        };
        assert!(c.validate().unwrap_err().to_string().contains("HOST:PORT"));
        assert!(toml::from_str::<Config>("listn = 1").is_err());
        let c: Config = toml::from_str("[detect]\nseasonal_ratio = 0.5\n").unwrap();
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("seasonal_ratio"));
        let c: Config = toml::from_str("[detect]\nalpha = 0\n").unwrap();
        assert!(c.validate().unwrap_err().to_string().contains("alpha"));
    }
}
