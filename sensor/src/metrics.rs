//! Counters and latency histograms of the running sensor, rendered as
//! Prometheus text and optionally served on `--metrics-listen`.
//!
//! Hot loops keep plain local counters and publish them here once per batch
//! or window, so the per-packet path never touches a shared cache line.

use crate::decode::Malformed;
use hdrhistogram::Histogram;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Sensor-wide counters (monotonic since start) and latency histograms.
#[derive(Debug)]
pub struct Metrics {
    /// Frames read from libpcap.
    pub received: AtomicU64,
    /// Packets to the darknet, accounted in statistics.
    pub darknet: AtomicU64,
    /// IP packets to addresses outside the darknet.
    pub not_darknet: AtomicU64,
    /// Frames without IP.
    pub non_ip: AtomicU64,
    /// Darknet packets from excluded sources (research scanners).
    pub excluded: AtomicU64,
    /// Malformed frames by reason ([`Malformed::index`]).
    pub malformed: [AtomicU64; Malformed::ALL.len()],
    /// Records dropped because a shard queue was full (live mode).
    pub pipeline_dropped: AtomicU64,
    /// Kernel drops reported by libpcap.
    pub kernel_dropped: AtomicU64,
    /// Interface drops reported by libpcap.
    pub if_dropped: AtomicU64,
    /// Windows closed and summarised.
    pub windows: AtomicU64,
    /// Summaries the sink failed to take.
    pub sink_errors: AtomicU64,
    hist: Mutex<Hists>,
}

#[derive(Debug)]
struct Hists {
    decode_ns: Histogram<u64>,
    queue_wait_us: Histogram<u64>,
    window_close_us: Histogram<u64>,
}

/// Which latency a sample belongs to.
#[derive(Clone, Copy, Debug)]
pub enum Latency {
    /// Decode + classify of one frame, ns (sampled).
    DecodeNs,
    /// Time a batch waited in a shard queue, µs.
    QueueWaitUs,
    /// Window close to summary handed to the sink, µs.
    WindowCloseUs,
}

/// A histogram for local recording before [`Metrics::merge_histogram`].
pub fn new_histogram() -> Histogram<u64> {
    // 3 significant digits, auto-resizing. `new` fails only for sigfig > 5.
    Histogram::new(3).expect("3 significant digits is a valid histogram precision")
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            received: AtomicU64::new(0),
            darknet: AtomicU64::new(0),
            not_darknet: AtomicU64::new(0),
            non_ip: AtomicU64::new(0),
            excluded: AtomicU64::new(0),
            malformed: Default::default(),
            pipeline_dropped: AtomicU64::new(0),
            kernel_dropped: AtomicU64::new(0),
            if_dropped: AtomicU64::new(0),
            windows: AtomicU64::new(0),
            sink_errors: AtomicU64::new(0),
            hist: Mutex::new(Hists {
                decode_ns: new_histogram(),
                queue_wait_us: new_histogram(),
                window_close_us: new_histogram(),
            }),
        }
    }
}

impl Metrics {
    /// Adds a locally recorded histogram.
    pub fn merge_histogram(&self, which: Latency, h: &Histogram<u64>) {
        if h.is_empty() {
            return;
        }
        if let Ok(mut g) = self.hist.lock() {
            let target = match which {
                Latency::DecodeNs => &mut g.decode_ns,
                Latency::QueueWaitUs => &mut g.queue_wait_us,
                Latency::WindowCloseUs => &mut g.window_close_us,
            };
            let _ = target.add(h);
        }
    }

    /// Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "darkscope_sensor_received_total",
                "Frames read from libpcap.",
                &self.received,
            ),
            (
                "darkscope_sensor_darknet_packets_total",
                "Packets to the darknet, accounted in statistics.",
                &self.darknet,
            ),
            (
                "darkscope_sensor_not_darknet_total",
                "IP packets to addresses outside the darknet.",
                &self.not_darknet,
            ),
            (
                "darkscope_sensor_non_ip_total",
                "Frames that carry no IP packet.",
                &self.non_ip,
            ),
            (
                "darkscope_sensor_excluded_total",
                "Darknet packets from excluded sources (research scanners).",
                &self.excluded,
            ),
            (
                "darkscope_sensor_pipeline_dropped_total",
                "Packets dropped because a shard queue was full.",
                &self.pipeline_dropped,
            ),
            (
                "darkscope_sensor_kernel_dropped_total",
                "Packets the kernel dropped (libpcap ps_drop).",
                &self.kernel_dropped,
            ),
            (
                "darkscope_sensor_if_dropped_total",
                "Packets the interface dropped (libpcap ps_ifdrop).",
                &self.if_dropped,
            ),
            (
                "darkscope_sensor_windows_total",
                "Windows closed and summarised.",
                &self.windows,
            ),
            (
                "darkscope_sensor_sink_errors_total",
                "Summaries the output failed to take.",
                &self.sink_errors,
            ),
        ];
        for (name, help, v) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                v.load(Relaxed)
            );
        }
        let name = "darkscope_sensor_malformed_total";
        let _ = writeln!(
            out,
            "# HELP {name} Frames that could not be decoded, by reason.\n# TYPE {name} counter"
        );
        for m in Malformed::ALL {
            let _ = writeln!(
                out,
                "{name}{{reason=\"{}\"}} {}",
                m.as_str(),
                self.malformed[m.index()].load(Relaxed)
            );
        }
        if let Ok(g) = self.hist.lock() {
            for (name, help, unit_s, h) in [
                (
                    "darkscope_sensor_decode_seconds",
                    "Decode and classify time per frame (sampled).",
                    1e-9,
                    &g.decode_ns,
                ),
                (
                    "darkscope_sensor_queue_wait_seconds",
                    "Time a batch waited in a shard queue.",
                    1e-6,
                    &g.queue_wait_us,
                ),
                (
                    "darkscope_sensor_window_close_seconds",
                    "Window close to summary output.",
                    1e-6,
                    &g.window_close_us,
                ),
            ] {
                let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} summary");
                for q in [0.5, 0.9, 0.99, 0.999] {
                    let v = h.value_at_quantile(q) as f64 * unit_s;
                    let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {v:e}");
                }
                let sum = h.mean() * h.len() as f64 * unit_s;
                let _ = writeln!(out, "{name}_sum {sum:e}\n{name}_count {}", h.len());
            }
        }
        out
    }
}

/// Serves `GET /metrics` on `addr` in a background thread until the process ends.
pub fn serve(addr: &str, metrics: Arc<Metrics>) -> Result<std::thread::JoinHandle<()>, String> {
    let server =
        tiny_http::Server::http(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    let handle = std::thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in server.incoming_requests() {
                let resp = if req.url() == "/metrics" {
                    let mut r = tiny_http::Response::from_string(metrics.render());
                    if let Ok(ct) =
                        tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                    {
                        r = r.with_header(ct);
                    }
                    r
                } else {
                    tiny_http::Response::from_string("not found; try /metrics\n")
                        .with_status_code(404)
                };
                let _ = req.respond(resp);
            }
        })
        .map_err(|e| e.to_string())?;
    Ok(handle)
}
