//! Getting summaries to the aggregator without losing any: every summary is
//! first written to a spool directory (atomic write + fsync), then uploaded
//! in window order by a background thread, and deleted only after a 2xx.
//!
//! - Network errors, timeouts, 5xx, 408 and 429 are retried with exponential
//!   backoff and full jitter (0.5 s doubling to 60 s).
//! - 401/403 (a credential problem, not a data problem) are retried at the
//!   longest backoff and logged: moving every summary aside because a token
//!   was mistyped would strand them all.
//! - Any other 4xx means the aggregator will never accept that summary: it is
//!   moved to `rejected/` with the aggregator's reason beside it.
//! - The spool has a size cap; when full, the oldest summaries are evicted and
//!   counted, and the next summary reports the count (`capture.spool_evicted`).
//! - A restarted sensor finds its spool and resumes uploading.

use crate::export::{Sink, SinkError};
use darkscope_common::wire::BinaryLayout;
use darkscope_common::Summary;
use rand::Rng;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Why the spool or uploader could not start.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// Spool directory problems.
    #[error("spool '{0}': {1}")]
    Spool(PathBuf, std::io::Error),
    /// The token file is missing or empty.
    #[error("token file '{0}': {1}")]
    Token(PathBuf, String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
}

/// The form summaries are spooled and uploaded in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WireFormat {
    /// The compact binary form
    /// ([`darkscope_common::wire::BINARY_MEDIA_TYPE`]): about a sixth of
    /// JSON's parsing cost at the aggregator. An aggregator that refuses it
    /// gets the same summary as JSON.
    #[default]
    Binary,
    /// The JSON document (readable with `zstdcat … | jq`).
    Json,
}

impl std::str::FromStr for WireFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "binary" => Ok(WireFormat::Binary),
            "json" => Ok(WireFormat::Json),
            other => Err(format!("'{other}' is not a format (binary or json)")),
        }
    }
}

/// Spool file suffixes by form; a spool may hold several (after a change of
/// `format`, or an upgrade), and each file is uploaded as what it holds.
const BINARY_SUFFIX: &str = ".b2.zst";
/// The first binary layout, spooled by releases up to 0.1.0.
const BINARY_V1_SUFFIX: &str = ".bin.zst";
const JSON_SUFFIX: &str = ".json.zst";

/// The binary layout a spool file holds, or `None` for JSON.
fn layout_of(f: &Path) -> Option<BinaryLayout> {
    let name = f.to_string_lossy();
    if name.ends_with(BINARY_SUFFIX) {
        Some(BinaryLayout::V2)
    } else if name.ends_with(BINARY_V1_SUFFIX) {
        Some(BinaryLayout::V1)
    } else {
        None
    }
}

/// The on-disk queue of summaries waiting for upload.
pub struct Spool {
    dir: PathBuf,
    cap_bytes: u64,
    format: WireFormat,
    evicted: AtomicU64,
    /// Bumped on every push; the uploader waits on it.
    signal: (Mutex<u64>, Condvar),
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl Spool {
    /// Opens (creating) a spool in `dir`, holding at most `cap_bytes`,
    /// writing new summaries in `format`.
    pub fn open(dir: &Path, cap_bytes: u64, format: WireFormat) -> Result<Spool, UploadError> {
        let err = |e| UploadError::Spool(dir.to_path_buf(), e);
        fs::create_dir_all(dir.join("rejected")).map_err(err)?;
        // Leftovers of a write interrupted by a crash are incomplete: drop them.
        for e in fs::read_dir(dir).map_err(err)?.flatten() {
            if e.file_name().to_string_lossy().ends_with(".tmp") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            cap_bytes,
            format,
            evicted: AtomicU64::new(0),
            signal: (Mutex::new(0), Condvar::new()),
        })
    }

    /// Summaries waiting, oldest window first.
    pub fn pending(&self) -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = fs::read_dir(&self.dir)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.path())
                    .filter(|p| p.extension().is_some_and(|x| x == "zst"))
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Writes a summary durably (zstd, temp file, fsync, rename, fsync dir),
    /// then evicts the oldest summaries while the spool is over its cap.
    pub fn push(&self, s: &Summary) -> std::io::Result<PathBuf> {
        let (raw, suffix) = match self.format {
            WireFormat::Binary => (s.to_binary().map_err(std::io::Error::other)?, BINARY_SUFFIX),
            WireFormat::Json => (serde_json::to_vec(s)?, JSON_SUFFIX),
        };
        let body = zstd::encode_all(&raw[..], 3)?;
        let name = format!("{:020}-{}{suffix}", s.window.start.0, s.sensor.id);
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!("{name}.tmp"));
        // A spool directory removed under a running sensor (a wiped or
        // replaced disk) is made again.
        if !self.dir.is_dir() {
            log::warn!("spool {} is gone: making it again", self.dir.display());
            fs::create_dir_all(self.dir.join("rejected"))?;
        }
        let written = File::create(&tmp).and_then(|mut f| {
            f.write_all(&body)?;
            f.sync_all()
        });
        if let Err(e) = written {
            // A half-written file only takes space (a full disk, say).
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        fs::rename(&tmp, &path)?;
        sync_dir(&self.dir)?;
        self.enforce_cap();
        let (m, cv) = &self.signal;
        if let Ok(mut n) = m.lock() {
            *n += 1;
        }
        cv.notify_all();
        Ok(path)
    }

    fn enforce_cap(&self) {
        let files = self.pending();
        let mut sizes: Vec<(PathBuf, u64)> = files
            .into_iter()
            .map(|p| {
                let n = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, n)
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|x| x.1).sum();
        // Never evict the newest summary: it is the one just written.
        while total > self.cap_bytes && sizes.len() > 1 {
            let (p, n) = sizes.remove(0);
            if fs::remove_file(&p).is_ok() {
                self.evicted.fetch_add(1, Relaxed);
                log::warn!(
                    "spool over {} bytes: evicted {}",
                    self.cap_bytes,
                    p.display()
                );
            }
            total -= n;
        }
    }

    /// Evictions since the last call (reported in the next summary).
    pub fn take_evicted(&self) -> u64 {
        self.evicted.swap(0, Relaxed)
    }

    fn wait_for_push(&self, seen: u64, timeout: Duration) -> u64 {
        let (m, cv) = &self.signal;
        let Ok(g) = m.lock() else { return seen };
        match cv.wait_timeout_while(g, timeout, |n| *n == seen) {
            Ok((g, _)) => *g,
            Err(_) => seen,
        }
    }

    fn reject(&self, path: &Path, reason: &str) {
        let Some(name) = path.file_name() else { return };
        let target = self.dir.join("rejected").join(name);
        if fs::rename(path, &target).is_ok() {
            let _ = fs::write(target.with_extension("reason.txt"), reason);
        }
    }
}

/// Summaries held in memory while the spool cannot be written (a full
/// disk); past this many the oldest are dropped and counted as evicted.
pub const BACKLOG_MAX: usize = 256;

/// The sink that spools each summary (and stamps the eviction count into
/// it). When the spool cannot be written (disk full, read-only, gone), the
/// sensor keeps capturing: summaries wait in memory, oldest first, and go to
/// the spool as soon as a write succeeds again; past [`BACKLOG_MAX`] the
/// oldest are dropped and reported as evicted in the next summary.
pub struct SpoolSink {
    spool: Arc<Spool>,
    backlog: std::collections::VecDeque<Summary>,
    failing: bool,
}

impl SpoolSink {
    /// A sink writing into `spool`.
    pub fn new(spool: Arc<Spool>) -> SpoolSink {
        SpoolSink {
            spool,
            backlog: Default::default(),
            failing: false,
        }
    }

    /// Summaries waiting in memory for the spool.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// Writes the backlog to the spool, oldest first; stops at the first
    /// failure (logged once per outage).
    fn drain(&mut self) -> std::io::Result<()> {
        while let Some(s) = self.backlog.front() {
            Self::write(&self.spool, &mut self.failing, s)?;
            self.backlog.pop_front();
        }
        Ok(())
    }

    /// Spools one summary; logs the start and the end of an outage once.
    fn write(spool: &Spool, failing: &mut bool, s: &Summary) -> std::io::Result<()> {
        match spool.push(s) {
            Err(e) => {
                if !*failing {
                    log::error!(
                        "cannot write to the spool {}: {e}; keeping summaries in memory (up to {BACKLOG_MAX}) until it works again",
                        spool.dir.display()
                    );
                    *failing = true;
                }
                Err(e)
            }
            Ok(_) => {
                if *failing {
                    log::warn!("spool {} writable again", spool.dir.display());
                    *failing = false;
                }
                Ok(())
            }
        }
    }
}

impl Sink for SpoolSink {
    fn emit(&mut self, s: &mut Summary) -> Result<(), SinkError> {
        s.capture.spool_evicted += self.spool.take_evicted();
        // Older summaries first; the new one is copied only if it must wait.
        // A failed write is not fatal: capture goes on, the backlog waits.
        if self.drain().is_ok() && Self::write(&self.spool, &mut self.failing, s).is_ok() {
            return Ok(());
        }
        self.backlog.push_back(s.clone());
        if self.backlog.len() > BACKLOG_MAX {
            self.backlog.pop_front();
            self.spool.evicted.fetch_add(1, Relaxed);
            log::warn!("spool unwritable and {BACKLOG_MAX} summaries waiting: dropped the oldest");
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), SinkError> {
        self.drain().map_err(|err| SinkError::Unspooled {
            count: self.backlog.len(),
            dir: self.spool.dir.clone(),
            err,
        })
    }
}

/// Where and how to upload.
#[derive(Clone, Debug)]
pub struct UploadTarget {
    /// Aggregator base URLs, e.g. `http://127.0.0.1:8080`: replicas sharing
    /// one database. The uploader stays on the one that works and moves to
    /// the next on a network error or 5xx.
    pub urls: Vec<String>,
    /// Bearer token (never logged).
    pub token: String,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Extra CA to trust (PEM), for an aggregator with a private CA.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate chain and key (PEM, concatenated), for mutual TLS.
    pub identity_pem: Option<Vec<u8>>,
    /// A summary that finds the spool empty waits a random share of this
    /// before its first attempt: a fleet whose windows all close on the
    /// minute spreads its uploads instead of queueing them at once.
    pub splay: Duration,
}

impl UploadTarget {
    /// Reads the token from `path` (first line, trimmed).
    pub fn token_from_file(path: &Path) -> Result<String, UploadError> {
        let text = fs::read_to_string(path)
            .map_err(|e| UploadError::Token(path.to_path_buf(), e.to_string()))?;
        let t = text.lines().next().unwrap_or("").trim().to_string();
        if t.is_empty() {
            return Err(UploadError::Token(path.to_path_buf(), "empty".into()));
        }
        Ok(t)
    }
}

/// What one upload attempt came to.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Done,
    Retry(String),
    Credentials(String),
    Reject(String),
}

/// The background uploader thread.
pub struct Uploader {
    spool: Arc<Spool>,
    done: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Summaries acknowledged by the aggregator.
    pub uploaded: Arc<AtomicU64>,
}

const BACKOFF_MIN: Duration = Duration::from_millis(500);
const BACKOFF_MAX: Duration = Duration::from_secs(60);

impl Uploader {
    /// Starts uploading everything in `spool` (including what a previous run left).
    pub fn start(spool: Arc<Spool>, target: UploadTarget) -> Result<Uploader, UploadError> {
        let mut builder = reqwest::blocking::Client::builder()
            .timeout(target.timeout)
            .user_agent(concat!("darkscope-sensor/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &target.ca_pem {
            let ca = reqwest::Certificate::from_pem(pem)
                .map_err(|e| UploadError::Client(format!("CA file: {e}")))?;
            builder = builder.add_root_certificate(ca);
        }
        if let Some(pem) = &target.identity_pem {
            let id = reqwest::Identity::from_pem(pem)
                .map_err(|e| UploadError::Client(format!("client certificate: {e}")))?;
            builder = builder.identity(id);
        }
        let client = builder
            .build()
            .map_err(|e| UploadError::Client(e.to_string()))?;
        let done = Arc::new(AtomicBool::new(false));
        let uploaded = Arc::new(AtomicU64::new(0));
        let (sp, dn, up) = (spool.clone(), done.clone(), uploaded.clone());
        let handle = std::thread::Builder::new()
            .name("uploader".into())
            .spawn(move || upload_loop(&sp, &client, &target, &dn, &up))
            .map_err(|e| UploadError::Client(e.to_string()))?;
        Ok(Uploader {
            spool,
            done,
            handle: Some(handle),
            uploaded,
        })
    }

    /// Waits until the spool is empty or `grace` has passed, then stops the
    /// thread. Returns the number of summaries still spooled (kept for the next run).
    pub fn finish(mut self, grace: Duration) -> usize {
        let deadline = Instant::now() + grace;
        while !self.spool.pending().is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        self.done.store(true, Relaxed);
        {
            let (m, cv) = &self.spool.signal;
            if let Ok(mut n) = m.lock() {
                *n += 1;
            }
            cv.notify_all();
        }
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        self.spool.pending().len()
    }
}

/// The JSON form of a spooled binary summary (zstd in, zstd out).
fn binary_to_json(body: &[u8], layout: BinaryLayout) -> Option<Vec<u8>> {
    let raw = zstd::decode_all(body).ok()?;
    let s = Summary::from_binary_as(&raw, layout).ok()?;
    zstd::encode_all(&serde_json::to_vec(&s).ok()?[..], 3).ok()
}

fn attempt(
    client: &reqwest::blocking::Client,
    t: &UploadTarget,
    base: &str,
    body: Vec<u8>,
    binary: Option<BinaryLayout>,
) -> Outcome {
    let url = format!("{}/api/v1/summaries", base.trim_end_matches('/'));
    let media = binary.map_or("application/json", BinaryLayout::media_type);
    let r = client
        .post(url)
        .bearer_auth(&t.token)
        .header("Content-Type", media)
        .header("Content-Encoding", "zstd")
        // Our clock, so the aggregator can tell when it is off.
        .header(
            "Date",
            httpdate::fmt_http_date(std::time::SystemTime::now()),
        )
        .body(body)
        .send();
    match r {
        Err(e) => Outcome::Retry(format!("network: {}", darkscope_common::causes(&e))),
        Ok(resp) => {
            let status = resp.status();
            if status.is_success() {
                return Outcome::Done;
            }
            let text = resp.text().unwrap_or_default();
            let reason = format!("{status}: {}", text.trim());
            match status.as_u16() {
                401 | 403 => Outcome::Credentials(reason),
                408 | 429 => Outcome::Retry(reason),
                400..=499 => Outcome::Reject(reason),
                _ => Outcome::Retry(reason),
            }
        }
    }
}

fn upload_loop(
    spool: &Spool,
    client: &reqwest::blocking::Client,
    t: &UploadTarget,
    done: &AtomicBool,
    uploaded: &AtomicU64,
) {
    let mut backoff = BACKOFF_MIN;
    let mut seen = 0u64;
    // The aggregator in use, and how many in a row have failed.
    let mut current = 0usize;
    let mut failed = 0usize;
    let n = t.urls.len().max(1);
    // The spool was empty: what comes next is a fresh window (not a backlog).
    let mut fresh = false;
    while !done.load(Relaxed) {
        let files = spool.pending();
        if files.is_empty() {
            seen = spool.wait_for_push(seen, Duration::from_secs(1));
            fresh = true;
            continue;
        }
        if std::mem::take(&mut fresh) && !t.splay.is_zero() {
            pause(t.splay.mul_f64(rand::thread_rng().gen::<f64>()), done);
        }
        let mut wait = None;
        for f in files {
            if done.load(Relaxed) {
                return;
            }
            let Ok(body) = fs::read(&f) else {
                continue; // evicted meanwhile
            };
            let base = t.urls.get(current).map(String::as_str).unwrap_or("");
            let binary = layout_of(&f);
            let mut outcome = attempt(client, t, base, body, binary);
            if let (Outcome::Reject(reason), Some(layout)) = (&outcome, binary) {
                // An aggregator that predates this binary layout reads it
                // as bad JSON: send the same summary as JSON before rejecting.
                if let Some(json) = fs::read(&f).ok().and_then(|b| binary_to_json(&b, layout)) {
                    log::warn!("{base} refused the binary form ({reason}); sending {} as JSON (upgrade the aggregator, or set [upload] format = \"json\" for it)", f.display());
                    outcome = attempt(client, t, base, json, None);
                }
            }
            match outcome {
                Outcome::Done => {
                    let _ = fs::remove_file(&f);
                    uploaded.fetch_add(1, Relaxed);
                    backoff = BACKOFF_MIN;
                    failed = 0;
                }
                Outcome::Reject(reason) => {
                    log::error!(
                        "aggregator rejected {}: {reason}; moved to rejected/",
                        f.display()
                    );
                    spool.reject(&f, &reason);
                }
                Outcome::Credentials(reason) => {
                    log::error!("aggregator refused the sensor's credentials ({reason}); check --token-file; retrying");
                    wait = Some(BACKOFF_MAX);
                    break;
                }
                Outcome::Retry(reason) => {
                    failed += 1;
                    current = (current + 1) % n;
                    if failed < n {
                        // Another replica may take it: try it at once.
                        log::warn!(
                            "upload to {base} failed ({reason}); trying {}",
                            t.urls[current]
                        );
                    } else {
                        log::warn!("upload failed ({reason}); retrying in about {backoff:?}");
                        wait = Some(backoff);
                        backoff = (backoff * 2).min(BACKOFF_MAX);
                        failed = 0;
                    }
                    break;
                }
            }
        }
        if let Some(w) = wait {
            // Full jitter, so that many sensors do not retry in step.
            pause(w.mul_f64(rand::thread_rng().gen_range(0.5..1.5)), done);
        }
    }
}

/// Sleeps for `d`, or less when `done` is set meanwhile.
fn pause(d: Duration, done: &AtomicBool) {
    let until = Instant::now() + d;
    while Instant::now() < until && !done.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(50).min(d));
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use darkscope_common::wire::*;
    use darkscope_common::Timestamp;

    /// An empty summary of the window starting at `start` (µs).
    pub(crate) fn summary(start: u64) -> Summary {
        Summary {
            schema: SCHEMA,
            sensor: SensorInfo {
                id: "t-1".into(),
                country: "ZZ".into(),
                darknet: vec![],
                monitored_ipv4: 0,
            },
            window: Window {
                start: Timestamp(start),
                end: Timestamp(start + 60_000_000),
            },
            capture: Default::default(),
            classes: Default::default(),
            fingerprints: Default::default(),
            totals: Default::default(),
            truncation: Default::default(),
            ports: vec![],
            sources: vec![],
        }
    }

    #[test]
    fn spool_orders_by_window_and_evicts_oldest_past_cap() {
        let dir = tempfile::tempdir().unwrap();
        let sp = Spool::open(dir.path(), 1_000_000, WireFormat::Json).unwrap();
        for w in [3u64, 1, 2] {
            sp.push(&summary(w * 60_000_000)).unwrap();
        }
        let names: Vec<String> = sp
            .pending()
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert!(names[0].starts_with("00000000000060000000-t-1"));
        assert_eq!(names.len(), 3);
        // A tiny cap keeps only the newest write.
        let small = Spool::open(dir.path(), 10, WireFormat::Binary).unwrap();
        small.push(&summary(4 * 60_000_000)).unwrap();
        assert_eq!(small.pending().len(), 1);
        assert_eq!(small.take_evicted(), 3);
        assert_eq!(small.take_evicted(), 0);
    }

    /// A request as a test server saw it.
    type Seen = (Instant, String, Vec<u8>);

    /// A loopback HTTP server that answers each request with the status
    /// line `answer(content type, body)` gives and notes what arrived.
    fn server(answer: fn(&str, &[u8]) -> &'static str) -> (String, Arc<Mutex<Vec<Seen>>>) {
        use std::io::{BufRead, BufReader, Read};
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", l.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || {
                    let mut r = BufReader::new(conn.try_clone().unwrap());
                    let mut conn = conn;
                    loop {
                        let mut len = 0usize;
                        let mut media = String::new();
                        let mut line = String::new();
                        loop {
                            line.clear();
                            if r.read_line(&mut line).unwrap_or(0) == 0 {
                                return;
                            }
                            let lower = line.to_ascii_lowercase();
                            if let Some(v) = lower.strip_prefix("content-length:") {
                                len = v.trim().parse().unwrap_or(0);
                            }
                            if let Some(v) = lower.strip_prefix("content-type:") {
                                media = v.trim().to_string();
                            }
                            if line == "\r\n" {
                                break;
                            }
                        }
                        let mut body = vec![0; len];
                        let _ = r.read_exact(&mut body);
                        let status = answer(&media, &body);
                        log.lock().unwrap().push((Instant::now(), media, body));
                        let _ = conn.write_all(
                            format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n").as_bytes(),
                        );
                    }
                });
            }
        });
        (url, seen)
    }

    /// An aggregator that predates the binary form: it reads every body as
    /// JSON.
    fn json_only(media: &str, body: &[u8]) -> &'static str {
        let raw = zstd::decode_all(body).unwrap_or_default();
        match serde_json::from_slice::<Summary>(&raw) {
            Ok(_) if media == "application/json" => "201 Created",
            _ => "400 Bad Request",
        }
    }

    fn target(url: &str, splay: Duration) -> UploadTarget {
        UploadTarget {
            urls: vec![url.to_string()],
            token: "t".into(),
            timeout: Duration::from_secs(5),
            ca_pem: None,
            identity_pem: None,
            splay,
        }
    }

    /// An aggregator that predates the binary form (it reads every body as
    /// JSON and refuses the binary one) still gets every summary, as JSON;
    /// nothing is moved to rejected/. One that takes it gets the binary form.
    #[test]
    fn an_aggregator_refusing_the_binary_form_gets_json() {
        let (url, seen) = server(json_only);
        let dir = tempfile::tempdir().unwrap();
        let sp = Arc::new(Spool::open(dir.path(), 1 << 20, WireFormat::Binary).unwrap());
        let up = Uploader::start(sp.clone(), target(&url, Duration::ZERO)).unwrap();
        for w in 1..=2 {
            sp.push(&summary(w * 60_000_000)).unwrap();
        }
        assert_eq!(up.finish(Duration::from_secs(10)), 0);
        let media: Vec<String> = seen.lock().unwrap().iter().map(|x| x.1.clone()).collect();
        assert_eq!(
            media,
            [
                BINARY_MEDIA_TYPE,
                "application/json",
                BINARY_MEDIA_TYPE,
                "application/json"
            ]
        );
        assert_eq!(
            fs::read_dir(dir.path().join("rejected")).unwrap().count(),
            0
        );

        fn binary(media: &str, body: &[u8]) -> &'static str {
            let raw = zstd::decode_all(body).unwrap_or_default();
            match Summary::from_binary(&raw) {
                Ok(s) if media == BINARY_MEDIA_TYPE && s.window.start.0 == 60_000_000 => {
                    "201 Created"
                }
                _ => "400 Bad Request",
            }
        }
        let (url, seen) = server(binary);
        let dir = tempfile::tempdir().unwrap();
        let sp = Arc::new(Spool::open(dir.path(), 1 << 20, WireFormat::Binary).unwrap());
        let up = Uploader::start(sp.clone(), target(&url, Duration::ZERO)).unwrap();
        sp.push(&summary(60_000_000)).unwrap();
        assert_eq!(up.finish(Duration::from_secs(10)), 0);
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    /// A spool written by a release before layout 2 (a real file: what
    /// 0.1.0 spooled for all-small.pcap, `testdata/wire/`) goes out after
    /// the upgrade as what it holds, layout 1 under its own media type,
    /// and reads as the summary that release wrote as JSON; a summary
    /// spooled now goes out in layout 2. To an aggregator that takes JSON
    /// only, both go as JSON.
    #[test]
    fn a_summary_spooled_before_an_upgrade_goes_out_as_it_was_written() {
        let data = Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/wire");
        let old = fs::read(data.join("all-small-v1.bin.zst")).unwrap();
        let json = zstd::decode_all(&fs::read(data.join("all-small-v1.json.zst")).unwrap()[..]);
        let expected: Summary = serde_json::from_slice(&json.unwrap()).unwrap();
        assert_eq!(expected.fingerprints.0[..3], [1, 1, 1]);

        fn by_layout(media: &str, body: &[u8]) -> &'static str {
            let raw = zstd::decode_all(body).unwrap_or_default();
            match BinaryLayout::of_media_type(media).map(|l| Summary::from_binary_as(&raw, l)) {
                Some(Ok(_)) => "201 Created",
                _ => "400 Bad Request",
            }
        }
        for (answer, media) in [
            (
                by_layout as fn(&str, &[u8]) -> &'static str,
                [BINARY_V1_MEDIA_TYPE, BINARY_MEDIA_TYPE],
            ),
            (json_only, ["application/json"; 2]),
        ] {
            let (url, seen) = server(answer);
            let dir = tempfile::tempdir().unwrap();
            fs::write(
                dir.path().join("00001795302000000000-golden-v1.bin.zst"),
                &old,
            )
            .unwrap();
            let sp = Arc::new(Spool::open(dir.path(), 1 << 20, WireFormat::Binary).unwrap());
            sp.push(&summary(1_795_302_060_000_000)).unwrap();
            let up = Uploader::start(sp.clone(), target(&url, Duration::ZERO)).unwrap();
            assert_eq!(up.finish(Duration::from_secs(10)), 0);
            let seen = seen.lock().unwrap();
            let accepted: Vec<&Seen> = seen
                .iter()
                .filter(|x| answer(&x.1, &x.2).starts_with("201"))
                .collect();
            let got: Vec<&str> = accepted.iter().map(|x| x.1.as_str()).collect();
            assert_eq!(got, media);
            let raw = zstd::decode_all(&accepted[0].2[..]).unwrap();
            let first = match BinaryLayout::of_media_type(&accepted[0].1) {
                Some(l) => Summary::from_binary_as(&raw, l).unwrap(),
                None => serde_json::from_slice(&raw).unwrap(),
            };
            assert_eq!(first, expected);
        }
    }

    /// Twelve sensors whose windows close at the same moment: with a splay
    /// their uploads spread over it (none later), without one they all go
    /// at once.
    #[test]
    fn fresh_windows_wait_a_random_share_of_the_splay() {
        let spread = |splay: Duration| {
            let (url, seen) = server(|_, _| "201 Created");
            let dirs: Vec<_> = (0..12).map(|_| tempfile::tempdir().unwrap()).collect();
            let ups: Vec<(Arc<Spool>, Uploader)> = dirs
                .iter()
                .map(|d| {
                    let sp = Arc::new(Spool::open(d.path(), 1 << 20, WireFormat::Binary).unwrap());
                    (
                        sp.clone(),
                        Uploader::start(sp, target(&url, splay)).unwrap(),
                    )
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            let t0 = Instant::now();
            for (sp, _) in &ups {
                sp.push(&summary(60_000_000)).unwrap();
            }
            for (_, u) in ups {
                assert_eq!(u.finish(Duration::from_secs(10)), 0);
            }
            let at: Vec<f64> = seen
                .lock()
                .unwrap()
                .iter()
                .map(|x| x.0.duration_since(t0).as_secs_f64())
                .collect();
            assert_eq!(at.len(), 12);
            let (lo, hi) = at
                .iter()
                .fold((f64::MAX, 0f64), |(a, b), &x| (a.min(x), b.max(x)));
            (lo, hi)
        };
        let (lo, hi) = spread(Duration::from_secs(2));
        assert!(
            hi - lo >= 0.5,
            "uploads within {:.2} s of each other",
            hi - lo
        );
        assert!(hi <= 3.0, "last upload {hi:.2} s after the window");
        let (_, hi) = spread(Duration::ZERO);
        assert!(hi < 1.0, "without a splay the last went {hi:.2} s after");
    }

    #[test]
    fn interrupted_writes_are_discarded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("x.json.zst.tmp"), b"half").unwrap();
        let sp = Spool::open(dir.path(), 1 << 20, WireFormat::Json).unwrap();
        assert!(sp.pending().is_empty());
        assert!(!dir.path().join("x.json.zst.tmp").exists());
    }

    #[test]
    fn empty_token_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tok");
        fs::write(&p, "\n").unwrap();
        assert!(UploadTarget::token_from_file(&p).is_err());
        fs::write(&p, "dst_abc\n").unwrap();
        assert_eq!(UploadTarget::token_from_file(&p).unwrap(), "dst_abc");
    }
}
