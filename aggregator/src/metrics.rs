//! The aggregator's own counters and ingest latency, as Prometheus text.

use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Counters since start.
#[derive(Debug)]
pub struct Metrics {
    /// Summaries stored.
    pub stored: AtomicU64,
    /// Retried summaries acknowledged without storing again.
    pub duplicates: AtomicU64,
    /// Uploads refused with a 4xx.
    pub rejected: AtomicU64,
    /// Uploads refused for credentials (401/403).
    pub unauthorized: AtomicU64,
    /// Storage failures (5xx).
    pub store_errors: AtomicU64,
    /// Query requests served.
    pub queries: AtomicU64,
    /// Alerts delivered to a webhook.
    pub webhooks_delivered: AtomicU64,
    /// Alerts a webhook never took (all attempts failed).
    pub webhooks_failed: AtomicU64,
    /// Alerts dropped because the delivery queue was full.
    pub webhooks_dropped: AtomicU64,
    /// Feed events recorded (sources matched to a subscriber at ingest).
    pub feed_events: AtomicU64,
    /// Feed digests delivered to subscribers' webhooks.
    pub feed_pushes: AtomicU64,
    /// Feed digests a subscriber's webhook never took (retried next round).
    pub feed_push_failures: AtomicU64,
    ingest_us: Mutex<Histogram<u64>>,
    /// Per federation peer.
    peers: Mutex<std::collections::BTreeMap<String, PeerCounters>>,
    /// Per sensor: its clock minus ours at its last upload, seconds.
    clocks: Mutex<std::collections::BTreeMap<String, f64>>,
}

/// A sensor clock further off than this, seconds, is reported (logged and
/// flagged in the console): its windows are cut by its own clock.
pub const CLOCK_SKEW_WARN_SECS: f64 = 30.0;

/// Federation counters of one peer.
#[derive(Clone, Debug, Default)]
struct PeerCounters {
    pulls: u64,
    pull_errors: u64,
    imported: u64,
    exports: u64,
    exported: u64,
    last_success_unix: f64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            stored: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            queries: AtomicU64::new(0),
            webhooks_delivered: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhooks_dropped: AtomicU64::new(0),
            feed_events: AtomicU64::new(0),
            feed_pushes: AtomicU64::new(0),
            feed_push_failures: AtomicU64::new(0),
            ingest_us: Mutex::new(
                Histogram::new(3).expect("3 significant digits is a valid histogram precision"),
            ),
            peers: Mutex::new(Default::default()),
            clocks: Mutex::new(Default::default()),
        }
    }
}

impl Metrics {
    /// Records one ingest's latency (receipt to acknowledgement).
    pub fn record_ingest(&self, us: u64) {
        if let Ok(mut h) = self.ingest_us.lock() {
            let _ = h.record(us);
        }
    }

    /// Records a pull from a peer.
    pub fn federation_pull(&self, peer: &str, imported: u64, ok: bool) {
        if let Ok(mut m) = self.peers.lock() {
            let c = m.entry(peer.to_string()).or_default();
            c.pulls += 1;
            c.imported += imported;
            if ok {
                c.last_success_unix = darkscope_common::Timestamp::now().0 as f64 / 1e6;
            } else {
                c.pull_errors += 1;
            }
        }
    }

    /// Records a change document served to a peer.
    pub fn federation_export(&self, peer: &str, observations: u64) {
        if let Ok(mut m) = self.peers.lock() {
            let c = m.entry(peer.to_string()).or_default();
            c.exports += 1;
            c.exported += observations;
        }
    }

    /// Records a sensor's clock from the `Date` of its upload (whole
    /// seconds, so within about a second); logs when it drifts past
    /// [`CLOCK_SKEW_WARN_SECS`] and when it comes back.
    pub fn sensor_clock(&self, sensor: &str, sent: std::time::SystemTime) {
        let now = std::time::SystemTime::now();
        let skew = match sent.duration_since(now) {
            Ok(ahead) => ahead.as_secs_f64(),
            Err(e) => -e.duration().as_secs_f64(),
        };
        let Ok(mut m) = self.clocks.lock() else {
            return;
        };
        let was = m.insert(sensor.to_string(), skew);
        let off = |s: f64| s.abs() > CLOCK_SKEW_WARN_SECS;
        match (was.is_some_and(off), off(skew)) {
            (false, true) => log::warn!(
                "sensor '{sensor}': its clock is {skew:+.0} s off this aggregator's; its windows are cut by its clock (check NTP)"
            ),
            (true, false) => log::info!("sensor '{sensor}': clock back in step ({skew:+.0} s)"),
            _ => {}
        }
    }

    /// A sensor's clock minus ours at its last upload, seconds (None before
    /// an upload with a `Date` header).
    pub fn clock_skew(&self, sensor: &str) -> Option<f64> {
        self.clocks.lock().ok()?.get(sensor).copied()
    }

    /// Ingest latency quantile in µs.
    pub fn ingest_quantile_us(&self, q: f64) -> u64 {
        self.ingest_us
            .lock()
            .map(|h| h.value_at_quantile(q))
            .unwrap_or(0)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, v) in [
            (
                "darkscope_aggregator_summaries_stored_total",
                "Summaries stored.",
                &self.stored,
            ),
            (
                "darkscope_aggregator_summaries_duplicate_total",
                "Retried summaries acknowledged without storing again.",
                &self.duplicates,
            ),
            (
                "darkscope_aggregator_summaries_rejected_total",
                "Uploads refused as invalid.",
                &self.rejected,
            ),
            (
                "darkscope_aggregator_unauthorized_total",
                "Uploads refused for credentials.",
                &self.unauthorized,
            ),
            (
                "darkscope_aggregator_store_errors_total",
                "Storage failures.",
                &self.store_errors,
            ),
            (
                "darkscope_aggregator_queries_total",
                "Query requests served.",
                &self.queries,
            ),
            (
                "darkscope_aggregator_feed_events_total",
                "Sources matched to a feed subscriber at ingest.",
                &self.feed_events,
            ),
            (
                "darkscope_aggregator_feed_pushes_total",
                "Feed digests delivered to subscribers' webhooks.",
                &self.feed_pushes,
            ),
            (
                "darkscope_aggregator_feed_push_failures_total",
                "Feed digests a subscriber's webhook did not take.",
                &self.feed_push_failures,
            ),
            (
                "darkscope_aggregator_webhooks_delivered_total",
                "Alerts delivered to a webhook.",
                &self.webhooks_delivered,
            ),
            (
                "darkscope_aggregator_webhooks_failed_total",
                "Alert deliveries that failed every attempt.",
                &self.webhooks_failed,
            ),
            (
                "darkscope_aggregator_webhooks_dropped_total",
                "Alerts dropped because the delivery queue was full.",
                &self.webhooks_dropped,
            ),
        ] {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        if let Ok(h) = self.ingest_us.lock() {
            let name = "darkscope_aggregator_ingest_seconds";
            let _ = writeln!(
                out,
                "# HELP {name} Upload receipt to durable acknowledgement.\n# TYPE {name} summary"
            );
            for q in [0.5, 0.9, 0.99] {
                let _ = writeln!(
                    out,
                    "{name}{{quantile=\"{q}\"}} {:e}",
                    h.value_at_quantile(q) as f64 / 1e6
                );
            }
            let _ = writeln!(out, "{name}_count {}", h.len());
        }
        if let Ok(m) = self.clocks.lock() {
            if !m.is_empty() {
                let name = "darkscope_sensor_clock_skew_seconds";
                let _ = writeln!(
                    out,
                    "# HELP {name} The sensor's clock minus the aggregator's at its last upload.\n# TYPE {name} gauge"
                );
                for (sensor, skew) in m.iter() {
                    let _ = writeln!(out, "{name}{{sensor=\"{sensor}\"}} {skew}");
                }
            }
        }
        if let Ok(m) = self.peers.lock() {
            type Field = fn(&PeerCounters) -> f64;
            let series: [(&str, &str, &str, Field); 6] = [
                (
                    "darkscope_federation_pulls_total",
                    "counter",
                    "Pulls from the peer.",
                    |c| c.pulls as f64,
                ),
                (
                    "darkscope_federation_pull_errors_total",
                    "counter",
                    "Pulls from the peer that failed.",
                    |c| c.pull_errors as f64,
                ),
                (
                    "darkscope_federation_imported_total",
                    "counter",
                    "Observations imported from the peer.",
                    |c| c.imported as f64,
                ),
                (
                    "darkscope_federation_last_success_timestamp_seconds",
                    "gauge",
                    "Unix time of the last successful pull (sync lag = now - this).",
                    |c| c.last_success_unix,
                ),
                (
                    "darkscope_federation_exports_total",
                    "counter",
                    "Change documents served to the peer.",
                    |c| c.exports as f64,
                ),
                (
                    "darkscope_federation_exported_total",
                    "counter",
                    "Observations served to the peer.",
                    |c| c.exported as f64,
                ),
            ];
            if !m.is_empty() {
                for (name, kind, help, f) in series {
                    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
                    for (peer, c) in m.iter() {
                        let _ = writeln!(out, "{name}{{peer=\"{peer}\"}} {}", f(c));
                    }
                }
            }
        }
        out
    }
}
