//! Sensor configuration: a TOML file (see `deploy/sensor.example.toml`) and/or
//! command-line flags, merged, defaulted and validated at load time.

use crate::capture::{LiveOptions, SourceSpec};
use crate::pipeline::{default_shards, PipelineConfig};
use darkscope_common::wire::SensorInfo;
use darkscope_common::{PrefixError, PrefixSet};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config '{0}': {1}")]
    Read(PathBuf, std::io::Error),
    /// The file is not valid TOML for this schema.
    #[error("config '{0}': {1}")]
    Parse(PathBuf, toml::de::Error),
    /// A prefix of the named list (`darknet`, `exclude`) is invalid.
    #[error("{0}: {1}")]
    Prefix(&'static str, PrefixError),
    /// A value is out of range or inconsistent.
    #[error("{0}")]
    Invalid(String),
}

/// The whole sensor configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Identity and monitored blocks.
    pub sensor: SensorSection,
    /// Where packets come from.
    pub capture: CaptureSection,
    /// Windows, shards and memory bounds.
    pub pipeline: PipelineSection,
    /// Where summaries and metrics go.
    pub output: OutputSection,
    /// Upload to an aggregator.
    pub upload: UploadSection,
}

/// `[upload]`: push each window's summary to an aggregator through a spool.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UploadSection {
    /// Aggregator base URL, e.g. `https://aggregator.example:8080` (off if
    /// unset); several comma-separated URLs (replicas sharing one database)
    /// are tried in turn when one fails.
    pub aggregator: Option<String>,
    /// File holding this sensor's token (from `darkscope-aggregator sensor add`).
    pub token_file: Option<PathBuf>,
    /// Spool directory: summaries wait here until acknowledged.
    pub spool_dir: PathBuf,
    /// Spool size cap, MiB; past it the oldest summaries are evicted (and counted).
    pub spool_mib: u64,
    /// Per-request timeout, seconds.
    pub timeout_secs: u64,
    /// At exit, how long to keep uploading what is spooled, seconds.
    pub drain_secs: u64,
    /// Live capture: a fresh window waits a random 0 to this many seconds
    /// before its upload, so sensors whose windows close on the same
    /// minute do not all upload in one burst. 0 uploads at once; reading a
    /// file never waits.
    pub splay_secs: u64,
    /// Form of uploaded summaries: `binary` (compact, cheap for the
    /// aggregator to read; an aggregator that refuses it gets JSON) or
    /// `json`.
    pub format: crate::upload::WireFormat,
    /// PEM CA to trust for the aggregator's certificate (a private CA), on
    /// top of the public roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for aggregators that require mutual TLS (with `client_key`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
}

impl Default for UploadSection {
    fn default() -> Self {
        UploadSection {
            aggregator: None,
            token_file: None,
            spool_dir: PathBuf::from("spool"),
            spool_mib: 1024,
            timeout_secs: 30,
            drain_secs: 30,
            splay_secs: 5,
            format: crate::upload::WireFormat::Binary,
            ca_file: None,
            client_cert: None,
            client_key: None,
        }
    }
}

/// Validated upload settings.
#[derive(Clone, Debug)]
pub struct UploadSettings {
    /// Aggregator base URLs, tried in order on failure.
    pub urls: Vec<String>,
    /// Token file.
    pub token_file: PathBuf,
    /// Spool directory.
    pub spool_dir: PathBuf,
    /// Spool cap in bytes.
    pub cap_bytes: u64,
    /// Per-request timeout.
    pub timeout: std::time::Duration,
    /// Drain time at exit.
    pub drain: std::time::Duration,
    /// Longest random wait of a fresh window before its upload (live capture).
    pub splay: std::time::Duration,
    /// Form of uploaded summaries.
    pub format: crate::upload::WireFormat,
    /// Extra CA to trust (PEM).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key (PEM), for mutual TLS.
    pub client_identity: Option<(PathBuf, PathBuf)>,
}

/// `[sensor]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SensorSection {
    /// Sensor id, unique per aggregator: letters, digits, `.`, `_`, `-`.
    pub id: String,
    /// ISO 3166-1 alpha-2 country code of the monitored blocks.
    pub country: String,
    /// Monitored prefixes (CIDR).
    pub darknet: Vec<String>,
    /// Source prefixes left out of all statistics (known research scanners),
    /// so they neither raise nor mask surge alerts; their packets are counted
    /// in `capture.excluded`. See deploy/sensor.example.toml.
    pub exclude: Vec<String>,
}

impl Default for SensorSection {
    fn default() -> Self {
        SensorSection {
            id: "sensor-1".into(),
            country: "ZZ".into(),
            darknet: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// `[capture]`: exactly one of `read` and `interface`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    /// A pcap/pcapng file to process (`-` for stdin).
    pub read: Option<PathBuf>,
    /// A live interface.
    pub interface: Option<String>,
    /// BPF filter for live capture.
    pub bpf: String,
    /// Bytes kept per packet in live capture.
    pub snaplen: i32,
    /// Kernel capture buffer, MiB.
    pub buffer_mib: i32,
    /// Once the capture is open, switch to this user (its group, no
    /// supplementary groups). Every capability is dropped in any case.
    pub user: Option<String>,
}

impl Default for CaptureSection {
    fn default() -> Self {
        CaptureSection {
            read: None,
            interface: None,
            bpf: String::new(),
            // Ethernet + QinQ + IPv6 + extension headers + TCP with options.
            snaplen: 192,
            buffer_mib: 64,
            user: None,
        }
    }
}

/// `[pipeline]`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PipelineSection {
    /// Window length in seconds.
    pub window_secs: u64,
    /// Statistics shards; 0 = available cores - 1 (at least 1).
    pub shards: usize,
    /// Records per batch between threads.
    pub batch: usize,
    /// Batches queued per shard.
    pub queue: usize,
    /// Sources tracked exactly per window; past it, sketches.
    pub source_cap: usize,
    /// Exact distinct-set entries per window; past it, sketches.
    pub pair_budget: usize,
}

impl Default for PipelineSection {
    fn default() -> Self {
        PipelineSection {
            window_secs: 60,
            shards: 0,
            batch: 1024,
            queue: 64,
            source_cap: 1_000_000,
            pair_budget: 4_000_000,
        }
    }
}

/// `[output]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutputSection {
    /// JSON-lines file of summaries (`-` for stdout).
    pub out: Option<PathBuf>,
    /// Address for the Prometheus endpoint, e.g. `127.0.0.1:9108` (off if unset).
    pub metrics_listen: Option<String>,
}

/// A configuration that passed validation, ready to run.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The input.
    pub source: SourceSpec,
    /// Pipeline settings.
    pub pipeline: PipelineConfig,
    /// Summary output.
    pub out: Option<PathBuf>,
    /// Metrics address.
    pub metrics_listen: Option<String>,
    /// Upload, if configured.
    pub upload: Option<UploadSettings>,
    /// User to switch to once the capture is open.
    pub user: Option<String>,
}

/// Largest `source_cap`: a shard numbers its sources with 32-bit slots, and
/// at ~100 bytes each this is already 10 GB of state a window.
pub const MAX_SOURCE_CAP: usize = 100_000_000;

fn invalid(msg: impl Into<String>) -> ConfigError {
    ConfigError::Invalid(msg.into())
}

impl Config {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Config, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }

    /// Checks every value and builds the runnable form.
    pub fn validate(&self) -> Result<Validated, ConfigError> {
        let s = &self.sensor;
        let id_ok = !s.id.is_empty()
            && s.id.len() <= 64
            && s.id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
        if !id_ok {
            return Err(invalid(format!(
                "sensor id '{}' must be 1-64 letters, digits, '.', '_' or '-'",
                s.id
            )));
        }
        if !(s.country.len() == 2 && s.country.chars().all(|c| c.is_ascii_uppercase())) {
            return Err(invalid(format!(
                "country '{}' must be an ISO 3166-1 alpha-2 code in capitals, e.g. JP (ZZ if unknown)",
                s.country
            )));
        }
        if s.darknet.is_empty() {
            return Err(invalid(
                "no darknet prefixes: give --darknet CIDR[,CIDR...] or [sensor] darknet = [...]",
            ));
        }
        let darknet = PrefixSet::parse_list(&s.darknet.join(","))
            .map_err(|e| ConfigError::Prefix("darknet", e))?;
        if let Some((a, b)) = darknet.overlap() {
            return Err(invalid(format!("darknet prefixes {a} and {b} overlap")));
        }
        let c = &self.capture;
        let source =
            match (&c.read, &c.interface) {
                (Some(p), None) => SourceSpec::File(p.clone()),
                (None, Some(i)) => {
                    if !(68..=65535).contains(&c.snaplen) {
                        return Err(invalid("snaplen must be 68-65535 bytes"));
                    }
                    if !(1..=4096).contains(&c.buffer_mib) {
                        return Err(invalid("buffer_mib must be 1-4096"));
                    }
                    SourceSpec::Live(LiveOptions {
                        interface: i.clone(),
                        bpf: c.bpf.clone(),
                        snaplen: c.snaplen,
                        buffer_mib: c.buffer_mib,
                        timeout_ms: 100,
                    })
                }
                (Some(_), Some(_)) => return Err(invalid(
                    "give either a capture file (--read) or an interface (--interface), not both",
                )),
                (None, None) => {
                    return Err(invalid(
                        "no input: give --read FILE (pcap/pcapng, - for stdin) or --interface IF",
                    ))
                }
            };
        let p = &self.pipeline;
        if !(1..=86_400).contains(&p.window_secs) {
            return Err(invalid("window_secs must be 1-86400"));
        }
        if p.shards > 256 {
            return Err(invalid("shards must be 0 (auto) to 256"));
        }
        if !(1..=1 << 16).contains(&p.batch) || !(1..=1 << 16).contains(&p.queue) {
            return Err(invalid("batch and queue must be 1-65536"));
        }
        if p.source_cap == 0 || p.pair_budget == 0 {
            return Err(invalid("source_cap and pair_budget must be at least 1"));
        }
        if p.source_cap > MAX_SOURCE_CAP {
            return Err(invalid(format!(
                "source_cap must be at most {MAX_SOURCE_CAP} (each tracked source costs about 100 bytes a window)"
            )));
        }
        if let Some(a) = &self.output.metrics_listen {
            a.parse::<std::net::SocketAddr>().map_err(|_| {
                invalid(format!(
                    "metrics_listen '{a}' is not HOST:PORT, e.g. 127.0.0.1:9108"
                ))
            })?;
        }
        let u = &self.upload;
        let upload = match (&u.aggregator, &u.token_file) {
            (None, _) => None,
            (Some(_), None) => {
                return Err(invalid("an aggregator needs a token: give --token-file (from `darkscope-aggregator sensor add`)"))
            }
            (Some(list), Some(tf)) => {
                let urls: Vec<String> = list
                    .split(',')
                    .map(|u| u.trim().to_string())
                    .filter(|u| !u.is_empty())
                    .collect();
                if urls.is_empty() {
                    return Err(invalid("aggregator: give at least one URL"));
                }
                if let Some(url) = urls
                    .iter()
                    .find(|u| !(u.starts_with("http://") || u.starts_with("https://")))
                {
                    return Err(invalid(format!("aggregator '{url}' must be an http:// or https:// URL")));
                }
                if u.client_cert.is_some() != u.client_key.is_some() {
                    return Err(invalid("client_cert and client_key go together"));
                }
                if u.spool_mib == 0 || u.timeout_secs == 0 {
                    return Err(invalid("spool_mib and timeout_secs must be at least 1"));
                }
                if u.splay_secs > 3600 {
                    return Err(invalid("splay_secs must be 0-3600"));
                }
                Some(UploadSettings {
                    urls,
                    token_file: tf.clone(),
                    spool_dir: u.spool_dir.clone(),
                    cap_bytes: u.spool_mib << 20,
                    timeout: std::time::Duration::from_secs(u.timeout_secs),
                    drain: std::time::Duration::from_secs(u.drain_secs),
                    splay: std::time::Duration::from_secs(u.splay_secs),
                    format: u.format,
                    ca_file: u.ca_file.clone(),
                    client_identity: u.client_cert.clone().zip(u.client_key.clone()),
                })
            }
        };
        if let Some(u) = &c.user {
            if u.is_empty() || u.contains(['/', ':', '\0']) {
                return Err(invalid(format!("user '{u}' is not a user name")));
            }
        }
        Ok(Validated {
            upload,
            source,
            user: c.user.clone(),
            pipeline: PipelineConfig {
                sensor: SensorInfo {
                    id: s.id.clone(),
                    country: s.country.clone(),
                    darknet: darknet.to_strings(),
                    monitored_ipv4: darknet.ipv4_addresses(),
                },
                darknet,
                exclude: if s.exclude.is_empty() {
                    PrefixSet::default()
                } else {
                    PrefixSet::parse_list(&s.exclude.join(","))
                        .map_err(|e| ConfigError::Prefix("exclude", e))?
                },
                window_us: p.window_secs * 1_000_000,
                shards: if p.shards == 0 {
                    default_shards()
                } else {
                    p.shards
                },
                batch: p.batch,
                queue: p.queue,
                source_cap: p.source_cap,
                pair_budget: p.pair_budget,
            },
            out: self.output.out.clone(),
            metrics_listen: self.output.metrics_listen.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        let mut c = Config::default();
        c.sensor.darknet = vec!["198.19.0.0/16".into()];
        c.capture.read = Some("x.pcap".into());
        c
    }

    #[test]
    fn defaults_with_input_and_darknet_are_valid() {
        let v = base().validate().unwrap();
        assert_eq!(v.pipeline.window_us, 60_000_000);
        assert!(v.pipeline.shards >= 1);
        assert_eq!(v.pipeline.sensor.monitored_ipv4, 65536);
    }

    #[test]
    fn example_config_in_deploy_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/sensor.example.toml");
        let c = Config::from_file(&path).unwrap();
        c.validate().unwrap();
    }

    #[test]
    fn bad_values_are_explained() {
        let mut c = base();
        c.sensor.country = "jp".into();
        assert!(c.validate().unwrap_err().to_string().contains("alpha-2"));
        let mut c = base();
        c.sensor.darknet = vec!["198.19.0.0/16".into(), "198.19.1.0/24".into()];
        assert!(c.validate().unwrap_err().to_string().contains("overlap"));
        let mut c = base();
        c.capture.interface = Some("eth0".into());
        assert!(c.validate().unwrap_err().to_string().contains("not both"));
        let mut c = base();
        c.sensor.id = "a b".into();
        assert!(c.validate().is_err());
        let mut c = base();
        c.pipeline.window_secs = 0;
        assert!(c.validate().is_err());
        let mut c = base();
        c.pipeline.source_cap = MAX_SOURCE_CAP + 1;
        assert!(c.validate().unwrap_err().to_string().contains("at most"));
        let mut c = base();
        c.upload.aggregator = Some("http://127.0.0.1:8080".into());
        assert!(c.validate().unwrap_err().to_string().contains("token"));
        c.upload.token_file = Some("t".into());
        c.upload.aggregator = Some("ftp://x".into());
        assert!(c.validate().unwrap_err().to_string().contains("http"));
        let mut c = base();
        c.sensor.darknet = vec!["10.0.0.0/33".into()];
        assert!(matches!(
            c.validate(),
            Err(ConfigError::Prefix("darknet", _))
        ));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<Config>("[sensor]\nidd = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("idd"), "{e}");
    }
}
