//! The sensor's threads and how records flow between them.
//!
//! ```text
//! capture thread ──batches──▶ shard 0..N (by source hash) ──window state──▶ merger ──▶ Sink
//!   read+decode+classify        own their state, no locks   ◀──emptied state──  builds Summary
//! ```
//!
//! - The capture thread reads, decodes, classifies and enqueues only. Records
//!   travel in batches over bounded `crossbeam-channel`s; emptied batches come
//!   back over a return channel, so the steady state allocates nothing.
//! - Backpressure is a named policy ([`Backpressure`]): offline input blocks
//!   (nothing is ever dropped); live capture never blocks the capture thread,
//!   a full shard queue drops the batch and counts it in `pipeline_dropped`.
//! - Windows: offline input is cut by packet timestamps, live capture by the
//!   wall clock. At a window's end the capture thread flushes its batches and
//!   sends every shard a close marker (in-band, so ordering is exact) and the
//!   merger the window's capture health. A shard hands its whole window state
//!   to the merger and goes on at once with an emptied one the merger handed
//!   back earlier; the merger turns each state into a partial (building its
//!   source rows), merges the N partials, and hands the summary to the sink.
//!   Window close thus costs a shard a pointer swap: on a busy window,
//!   building ~240,000 source rows took the shard a sixth of its time,
//!   while the capture thread waited behind it.

use crate::capture::{Capture, CaptureError, Next, PcapStats};
use crate::classify::classify;
use crate::decode::{decode_into, Kind, Malformed};
use crate::export::{Sink, SinkError};
use crate::metrics::{new_histogram, Latency, Metrics};
use crate::record::{Observation, PacketRecord};
use crate::stats::{Limits, Partial, Shard, SummaryMeta, V4Space};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use darkscope_common::hll::hash_addr;
use darkscope_common::wire::{CaptureHealth, SensorInfo, SourceRow, Window};
use darkscope_common::{PrefixSet, Timestamp};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

/// What to do when a shard's queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backpressure {
    /// Wait (offline input: never lose a packet).
    Block,
    /// Drop the batch and count it (live capture: never stall libpcap).
    DropNewest,
}

/// Everything the pipeline needs besides the capture and the sink.
#[derive(Clone, Debug)]
pub struct PipelineConfig {
    /// Sensor identity written into each summary.
    pub sensor: SensorInfo,
    /// Monitored blocks.
    pub darknet: PrefixSet,
    /// Sources left out of every statistic (known research scanners); counted.
    pub exclude: PrefixSet,
    /// Window length in µs.
    pub window_us: u64,
    /// Number of statistics shards.
    pub shards: usize,
    /// Records per batch.
    pub batch: usize,
    /// Batches queued per shard.
    pub queue: usize,
    /// Sources tracked per window (whole sensor).
    pub source_cap: usize,
    /// Exact distinct-set entries per window (whole sensor).
    pub pair_budget: usize,
}

/// Default shard count: one per core left after the capture thread, at least one.
pub fn default_shards() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get().saturating_sub(1))
        .unwrap_or(1)
        .max(1)
}

/// What a finished run did.
#[derive(Debug, Default)]
pub struct RunReport {
    /// Frames read.
    pub frames: u64,
    /// Darknet packets accounted.
    pub darknet: u64,
    /// Summaries emitted.
    pub windows: u64,
    /// A read error that ended the input early (e.g. a truncated file);
    /// everything read before it was summarised.
    pub read_error: Option<CaptureError>,
}

/// Why the pipeline stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The sink refused a summary.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// A worker thread died (a bug).
    #[error("internal error: {0}")]
    Internal(String),
}

struct Batch {
    records: Vec<Observation>,
    sent: Instant,
}

enum ToShard {
    Batch(Batch),
    Close(u64),
}

enum ToMerger {
    /// A shard's state at the end of window `.0`.
    Closed(u64, Box<Shard>),
    Meta(u64, Box<SummaryMeta>, Instant),
}

/// Capture-health counters of the open window (capture thread only).
#[derive(Default, Clone, Copy)]
struct WindowCounters {
    received: u64,
    darknet: u64,
    malformed: [u64; Malformed::ALL.len()],
    non_ip: u64,
    not_darknet: u64,
    excluded: u64,
    pipeline_dropped: u64,
}

#[inline]
fn shard_of(hash: u64, n: usize) -> usize {
    (((hash >> 32) * n as u64) >> 32) as usize
}

fn window_start(ts: u64, len: u64) -> u64 {
    ts - ts % len
}

/// Runs the pipeline until the input ends or `stop` is set.
pub fn run(
    mut cap: Capture,
    cfg: &PipelineConfig,
    sink: Box<dyn Sink>,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
    progress: Option<indicatif::ProgressBar>,
) -> Result<RunReport, PipelineError> {
    let n = cfg.shards.max(1);
    let limits = Limits::per_shard(cfg.source_cap, cfg.pair_budget, n);
    let space = Arc::new(V4Space::new(&cfg.darknet));
    let live = cap.is_live();
    let policy = if live {
        Backpressure::DropNewest
    } else {
        Backpressure::Block
    };
    let (free_tx, free_rx) = bounded::<Vec<Observation>>(n * (cfg.queue + 2));
    let (merge_tx, merge_rx) = bounded::<ToMerger>(n * 4 + 4);
    // Emptied shard states, from the merger back to the shards (their
    // tables keep their memory for the next window). Room for every state
    // there can be, so handing one back never fails.
    let (back_tx, back_rx) = bounded::<Box<Shard>>(n * STATES_PER_SHARD);

    std::thread::scope(|scope| {
        let mut shard_txs = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = bounded::<ToShard>(cfg.queue.max(1));
            shard_txs.push(tx);
            let free_tx = free_tx.clone();
            let merge_tx = merge_tx.clone();
            let metrics = metrics.clone();
            let back_rx = back_rx.clone();
            let space = space.clone();
            std::thread::Builder::new()
                .name(format!("shard-{i}"))
                .spawn_scoped(scope, move || {
                    shard_loop(rx, back_rx, free_tx, merge_tx, limits, &space, &metrics)
                })
                .map_err(|e| PipelineError::Internal(e.to_string()))?;
        }
        let merger_metrics = metrics.clone();
        let merger = std::thread::Builder::new()
            .name("merger".into())
            .spawn_scoped(scope, move || {
                merger_loop(merge_rx, back_tx, n, sink, &merger_metrics)
            })
            .map_err(|e| PipelineError::Internal(e.to_string()))?;

        let mut ctx = CaptureLoop {
            cfg,
            n,
            policy,
            shard_txs,
            free_rx,
            free_tx,
            merge_tx,
            batches: (0..n).map(|_| Vec::with_capacity(cfg.batch)).collect(),
            counters: WindowCounters::default(),
            published: WindowCounters::default(),
            metrics: &metrics,
            decode_hist: new_histogram(),
            last_stats: PcapStats::default(),
            report: RunReport::default(),
        };
        let read = ctx.read_all(&mut cap, &stop, progress.as_ref());
        let report = ctx.finish(read);
        let merged = merger
            .join()
            .map_err(|_| PipelineError::Internal("merger thread panicked".into()))?;
        let windows = merged?;
        report.map(|mut r| {
            r.windows = windows;
            r
        })
    })
}

struct CaptureLoop<'a> {
    cfg: &'a PipelineConfig,
    n: usize,
    policy: Backpressure,
    shard_txs: Vec<Sender<ToShard>>,
    free_rx: Receiver<Vec<Observation>>,
    free_tx: Sender<Vec<Observation>>,
    merge_tx: Sender<ToMerger>,
    batches: Vec<Vec<Observation>>,
    /// The open window's counters.
    counters: WindowCounters,
    /// The part of `counters` already added to `metrics`.
    published: WindowCounters,
    metrics: &'a Metrics,
    decode_hist: hdrhistogram::Histogram<u64>,
    last_stats: PcapStats,
    report: RunReport,
}

impl CaptureLoop<'_> {
    fn read_all(
        &mut self,
        cap: &mut Capture,
        stop: &AtomicBool,
        progress: Option<&indicatif::ProgressBar>,
    ) -> Result<(), PipelineError> {
        let link = cap.link();
        let live = cap.is_live();
        let wlen = self.cfg.window_us.max(1);
        let mut window: Option<u64> = if live {
            self.last_stats = cap.stats().unwrap_or_default();
            Some(window_start(Timestamp::now().0, wlen))
        } else {
            None
        };
        let mut bytes_read: u64 = 24;
        let mut frames: u64 = 0;
        // Live windows close on the wall clock: looked at every 256 frames and
        // on every read timeout (a quiet link).
        let mut check_clock = live;
        // Decoded in place, frame after frame.
        let mut r = PacketRecord::default();
        loop {
            if stop.load(Relaxed) {
                break;
            }
            if check_clock {
                self.check_clock(cap, &mut window, wlen)?;
                check_clock = false;
            }
            let next = match cap.read_next() {
                Ok(n) => n,
                Err(e) => {
                    log::error!("{e}; stopping input, summarising what was read");
                    self.report.read_error = Some(e);
                    break;
                }
            };
            match next {
                Next::Frame(ts, _len, data) => {
                    frames += 1;
                    bytes_read += 16 + data.len() as u64;
                    if frames % 65_536 == 0 {
                        if let Some(pb) = progress {
                            pb.set_position(bytes_read);
                        }
                        self.publish();
                    }
                    if live {
                        check_clock = frames % 256 == 0;
                    } else {
                        match window {
                            Some(w) if ts < w + wlen => {}
                            Some(w) => {
                                self.close_window(w, w + wlen, None)?;
                                window = Some(window_start(ts, wlen));
                            }
                            None => window = Some(window_start(ts, wlen)),
                        }
                    }
                    let timed = frames % 1024 == 0;
                    let t0 = timed.then(Instant::now);
                    self.counters.received += 1;
                    match decode_into(link, data, &mut r) {
                        Kind::Packet => {
                            if !self.cfg.darknet.contains(r.dst) {
                                self.counters.not_darknet += 1;
                            } else if self.cfg.exclude.contains(r.src) {
                                self.counters.excluded += 1;
                            } else {
                                r.ts = ts;
                                r.src_hash = hash_addr(r.src);
                                classify(&mut r);
                                self.push(&r)?;
                            }
                        }
                        Kind::NonIp => self.counters.non_ip += 1,
                        Kind::Malformed(m) => self.counters.malformed[m.index()] += 1,
                    }
                    if let Some(t0) = t0 {
                        let _ = self.decode_hist.record(t0.elapsed().as_nanos() as u64);
                    }
                }
                // Nothing to read. Partial batches stay put: they flush when full
                // or at window close (summaries are per window anyway), so a slow
                // trickle never turns into many tiny batches that fill the queues.
                Next::Timeout => check_clock = true,
                Next::End => break,
            }
        }
        if let Some(pb) = progress {
            pb.set_position(bytes_read);
        }
        self.report.frames = frames;
        // The last (possibly partial) window: offline only when it saw frames.
        if let Some(w) = window {
            let stats = if live { cap.stats() } else { None };
            self.close_window(w, w + wlen, stats)?;
        }
        Ok(())
    }

    fn check_clock(
        &mut self,
        cap: &mut Capture,
        window: &mut Option<u64>,
        wlen: u64,
    ) -> Result<(), PipelineError> {
        let now = Timestamp::now().0;
        if let Some(w) = *window {
            if now >= w + wlen {
                let stats = cap.stats();
                self.close_window(w, w + wlen, stats)?;
                *window = Some(window_start(now, wlen));
            }
        }
        Ok(())
    }

    #[inline]
    fn push(&mut self, r: &PacketRecord) -> Result<(), PipelineError> {
        self.counters.darknet += 1;
        let i = shard_of(r.src_hash, self.n);
        let b = &mut self.batches[i];
        b.push(r.observation());
        if b.len() >= self.cfg.batch {
            self.flush(i)?;
        }
        Ok(())
    }

    fn flush(&mut self, i: usize) -> Result<(), PipelineError> {
        if self.batches[i].is_empty() {
            return Ok(());
        }
        let fresh = self
            .free_rx
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(self.cfg.batch));
        let records = std::mem::replace(&mut self.batches[i], fresh);
        let msg = ToShard::Batch(Batch {
            records,
            sent: Instant::now(),
        });
        let tx = &self.shard_txs[i];
        match self.policy {
            Backpressure::Block => tx.send(msg).map_err(|_| dead("shard"))?,
            Backpressure::DropNewest => match tx.try_send(msg) {
                Ok(()) => {}
                Err(TrySendError::Full(ToShard::Batch(mut b))) => {
                    self.counters.pipeline_dropped += b.records.len() as u64;
                    self.counters.darknet -= b.records.len() as u64;
                    b.records.clear();
                    let _ = self.free_tx.try_send(b.records);
                }
                Err(_) => return Err(dead("shard")),
            },
        }
        Ok(())
    }

    fn flush_all(&mut self) -> Result<(), PipelineError> {
        for i in 0..self.n {
            self.flush(i)?;
        }
        Ok(())
    }

    /// Adds what the open window counted since the last call to the shared metrics.
    fn publish(&mut self) {
        let (m, c, p) = (self.metrics, &self.counters, &mut self.published);
        m.received.fetch_add(c.received - p.received, Relaxed);
        m.darknet.fetch_add(c.darknet - p.darknet, Relaxed);
        m.not_darknet
            .fetch_add(c.not_darknet - p.not_darknet, Relaxed);
        m.excluded.fetch_add(c.excluded - p.excluded, Relaxed);
        m.non_ip.fetch_add(c.non_ip - p.non_ip, Relaxed);
        m.pipeline_dropped
            .fetch_add(c.pipeline_dropped - p.pipeline_dropped, Relaxed);
        for ((a, b), q) in m.malformed.iter().zip(c.malformed).zip(p.malformed) {
            a.fetch_add(b - q, Relaxed);
        }
        *p = WindowCounters { ..*c };
        m.merge_histogram(Latency::DecodeNs, &self.decode_hist);
        self.decode_hist.reset();
    }

    fn close_window(
        &mut self,
        start: u64,
        end: u64,
        stats: Option<PcapStats>,
    ) -> Result<(), PipelineError> {
        let t0 = Instant::now();
        self.flush_all()?;
        for tx in &self.shard_txs {
            tx.send(ToShard::Close(start)).map_err(|_| dead("shard"))?;
        }
        self.publish();
        let c = std::mem::take(&mut self.counters);
        self.published = WindowCounters::default();
        self.report.darknet += c.darknet;
        let mut health = CaptureHealth {
            received: c.received,
            pipeline_dropped: c.pipeline_dropped,
            malformed: Malformed::ALL
                .into_iter()
                .filter(|m| c.malformed[m.index()] > 0)
                .map(|m| (m.as_str().to_string(), c.malformed[m.index()]))
                .collect(),
            non_ip: c.non_ip,
            not_darknet: c.not_darknet,
            excluded: c.excluded,
            ..Default::default()
        };
        if let Some(s) = stats {
            let prev = self.last_stats;
            health.received = s.received.wrapping_sub(prev.received) as u64;
            health.kernel_dropped = s.dropped.wrapping_sub(prev.dropped) as u64;
            health.if_dropped = s.if_dropped.wrapping_sub(prev.if_dropped) as u64;
            self.metrics
                .kernel_dropped
                .fetch_add(health.kernel_dropped, Relaxed);
            self.metrics
                .if_dropped
                .fetch_add(health.if_dropped, Relaxed);
            if health.kernel_dropped > 0 || health.pipeline_dropped > 0 {
                log::warn!(
                    "window {}: dropped {} in the kernel and {} in the pipeline",
                    Timestamp(start),
                    health.kernel_dropped,
                    health.pipeline_dropped
                );
            }
            self.last_stats = s;
        }
        let meta = SummaryMeta {
            sensor: self.cfg.sensor.clone(),
            window: Window {
                start: Timestamp(start),
                end: Timestamp(end),
            },
            capture: health,
            source_cap: self.cfg.source_cap as u64,
        };
        self.merge_tx
            .send(ToMerger::Meta(start, Box::new(meta), t0))
            .map_err(|_| dead("merger"))
    }

    fn finish(self, read: Result<(), PipelineError>) -> Result<RunReport, PipelineError> {
        // Dropping the senders ends the shards, then the merger.
        let CaptureLoop { report, .. } = self;
        read.map(|()| report)
    }
}

fn dead(what: &str) -> PipelineError {
    PipelineError::Internal(format!("{what} thread stopped unexpectedly"))
}

/// Window states a shard allocates: the one it fills and the one the
/// merger builds rows from.
const STATES_PER_SHARD: usize = 2;

fn shard_loop(
    rx: Receiver<ToShard>,
    back_rx: Receiver<Box<Shard>>,
    free_tx: Sender<Vec<Observation>>,
    merge_tx: Sender<ToMerger>,
    limits: Limits,
    space: &Arc<V4Space>,
    metrics: &Metrics,
) {
    let mut shard = Box::new(Shard::new(limits, space.clone()));
    let mut made = 1;
    let mut wait = new_histogram();
    for msg in rx {
        match msg {
            ToShard::Batch(mut b) => {
                let _ = wait.record(b.sent.elapsed().as_micros() as u64);
                shard.add_batch(&b.records);
                b.records.clear();
                let _ = free_tx.try_send(b.records);
            }
            ToShard::Close(w) => {
                metrics.merge_histogram(Latency::QueueWaitUs, &wait);
                wait.reset();
                // Go on with an emptied state and leave this one to the
                // merger. At most two states per shard, so memory stays
                // bounded: past that, wait for the merger to hand one back
                // (it is then a whole window behind).
                let spare = match back_rx.try_recv() {
                    Ok(s) => s,
                    Err(_) if made < STATES_PER_SHARD => {
                        made += 1;
                        Box::new(Shard::new(limits, space.clone()))
                    }
                    Err(_) => match back_rx.recv() {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                };
                let full = std::mem::replace(&mut shard, spare);
                if merge_tx.send(ToMerger::Closed(w, full)).is_err() {
                    return;
                }
            }
        }
    }
}

struct PendingWindow {
    partial: Partial,
    got: usize,
    meta: Option<(Box<SummaryMeta>, Instant)>,
}

fn merger_loop(
    rx: Receiver<ToMerger>,
    back_tx: Sender<Box<Shard>>,
    n: usize,
    mut sink: Box<dyn Sink>,
    metrics: &Metrics,
) -> Result<u64, PipelineError> {
    let mut pending: BTreeMap<u64, PendingWindow> = BTreeMap::new();
    let mut close_hist = new_histogram();
    let mut windows = 0;
    // The last summary's row vector: the next partial's rows reuse its memory.
    let mut spare_rows: Vec<SourceRow> = Vec::new();
    for msg in rx {
        let w = match msg {
            ToMerger::Closed(w, mut shard) => {
                let p = shard.take_partial(std::mem::take(&mut spare_rows));
                let _ = back_tx.try_send(shard);
                let e = pending.entry(w).or_insert_with(|| PendingWindow {
                    partial: Partial::empty(),
                    got: 0,
                    meta: None,
                });
                e.partial.merge(p);
                e.got += 1;
                w
            }
            ToMerger::Meta(w, m, t0) => {
                let e = pending.entry(w).or_insert_with(|| PendingWindow {
                    partial: Partial::empty(),
                    got: 0,
                    meta: None,
                });
                e.meta = Some((m, t0));
                w
            }
        };
        let ready = pending
            .get(&w)
            .is_some_and(|e| e.got == n && e.meta.is_some());
        if !ready {
            continue;
        }
        let Some(PendingWindow {
            partial,
            meta: Some((meta, t0)),
            ..
        }) = pending.remove(&w)
        else {
            continue;
        };
        let mut summary = partial.into_summary(*meta);
        sink.emit(&mut summary)?;
        // The rows' memory serves the next window's rows (tens of megabytes
        // on a busy window: allocating them afresh costs page faults).
        spare_rows = std::mem::take(&mut summary.sources);
        windows += 1;
        metrics.windows.fetch_add(1, Relaxed);
        let _ = close_hist.record(t0.elapsed().as_micros() as u64);
        metrics.merge_histogram(Latency::WindowCloseUs, &close_hist);
        close_hist.reset();
    }
    sink.finish()?;
    Ok(windows)
}
