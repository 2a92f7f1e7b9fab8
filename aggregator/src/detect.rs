//! Scanning-surge detection over the time series of **distinct sources** per
//! (proto, port), merged across sensors. Packets never raise an alert: one
//! source sending millions of packets is not a surge.
//!
//! Per port, per window: `y = ln(1 + sources)`.
//! - Baseline: an exponentially weighted mean and variance of `y`
//!   (`alpha`): a short memory follows daily cycles and slow growth, a long
//!   one notices slower campaigns but alarms on cycles. Frozen while an alert
//!   is open, so a surge does not become its own baseline.
//! - Change test: one-sided CUSUM on `z = (y - mean) / max(sd, min_sd)`,
//!   `S = max(0, S + z - k)`, alert when `S > h`. Larger `k` ignores smaller
//!   rises; larger `h` means fewer false alarms and later detection.
//! - Gates: the rise must also be at least `min_ratio` times the baseline
//!   and `min_added` sources more, so ports with a handful of sources do not
//!   alert on noise.
//! - New ports: a port with no history (`warmup` windows not reached) alerts
//!   when it reaches `new_port_sources` in one window.
//! - An alert resolves after `resolve_after` windows back under
//!   `resolve_ratio` times the baseline.
//! - A lasting shift (a botnet that stays): an alert still open after
//!   `accept_after` windows resolves, and the level it held becomes the
//!   port's baseline (the per-hour levels move by the same factor), so the
//!   port is watched for the next rise instead of staying one alert for
//!   ever. Shorter accepts a campaign as normal sooner; 0 never does.
//! - Slow rises: the fast baseline follows a rise spread over hours, so a
//!   second, seasonal one keeps the port's usual level per hour of the day
//!   (UTC) over the last `seasonal_days` days; `seasonal_windows`
//!   consecutive windows at `seasonal_ratio` times it (and `min_added`
//!   more) raise an alert. An hour's level is trusted after a day of it.
//!   Comparing with the same hour removes the daily cycle, so the ratio
//!   can be lower than a whole-day mean would need.
//!
//! With an enrichment table (`[feeds] asn_table`), the same test also runs
//! per (proto, port, source country) and per (proto, port, source AS)
//! (`by_country`, `by_asn`): a campaign from one network or country shows
//! there long before it moves the port's total. Those series count the
//! window's source rows (each source's busiest ports), exactly.

use crate::enrich::AsnTable;
use crate::store::{Alert, Store, StoreError, PEER_SENSOR_MARK};
use darkscope_common::{Addr, Proto, Timestamp};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Tunables (see the module doc for each trade-off).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Run surge detection at all. With several replicas only the elected
    /// leader runs it ([`crate::cluster`]); this turns it off everywhere.
    pub enabled: bool,
    /// EWMA weight of a new window in the baseline.
    pub alpha: f64,
    /// CUSUM slack, in standard deviations.
    pub k: f64,
    /// CUSUM threshold.
    pub h: f64,
    /// Floor of the standard deviation of ln(1 + sources).
    pub min_sd: f64,
    /// Observed sources must be at least this multiple of the baseline.
    pub min_ratio: f64,
    /// ... and at least this many sources above it.
    pub min_added: f64,
    /// Windows of history before the baseline is trusted.
    pub warmup: u32,
    /// A port without history alerts at this many sources in a window.
    pub new_port_sources: u64,
    /// Back under this multiple of the baseline counts towards resolving.
    pub resolve_ratio: f64,
    /// Consecutive windows under it that resolve an alert.
    pub resolve_after: u32,
    /// Windows after which an alert still open resolves and its level
    /// becomes the baseline (0: stays open until the level falls).
    pub accept_after: u32,
    /// Series watched: `local` (own sensors) or `global` (with federation
    /// peers' data). Global sees campaigns that start abroad, but a peer's
    /// sensors going silent or its pulls lagging look like gaps (coverage
    /// gating skips such windows).
    pub scope: crate::store::Scope,
    /// Memory of the per-hour-of-day baseline, days (0 turns the slow-rise
    /// rule off). Longer is steadier but follows weekly drift later.
    pub seasonal_days: f64,
    /// A slow rise must reach this multiple of the port's usual level at
    /// that hour ...
    pub seasonal_ratio: f64,
    /// ... for this many consecutive windows (larger ignores short bursts
    /// the fast rule already judges, and delays ramps as much).
    pub seasonal_windows: u32,
    /// With an enrichment table: also a series per (port, source country).
    /// Costs reading the window's source rows once per window.
    pub by_country: bool,
    /// With an enrichment table: also a series per (port, source AS).
    pub by_asn: bool,
}

impl DetectConfig {
    /// Checks the values, saying which is out of range.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |what: &str| Err(format!("[detect] {what}"));
        if !(self.alpha > 0.0 && self.alpha <= 1.0) {
            return bad("alpha must be in (0, 1]");
        }
        if !(self.k >= 0.0 && self.h > 0.0 && self.min_sd > 0.0) {
            return bad("k must be >= 0, h and min_sd > 0");
        }
        if !(self.min_ratio >= 1.0 && self.min_added >= 0.0 && self.resolve_ratio >= 1.0) {
            return bad("min_ratio and resolve_ratio must be >= 1, min_added >= 0");
        }
        if self.warmup == 0 || self.resolve_after == 0 {
            return bad("warmup and resolve_after must be at least 1");
        }
        if !((0.0..=365.0).contains(&self.seasonal_days)
            && self.seasonal_ratio >= 1.0
            && self.seasonal_windows >= 1)
        {
            return bad("seasonal_days must be 0-365, seasonal_ratio >= 1, seasonal_windows >= 1");
        }
        Ok(())
    }
}

/// Which sources of a port a series counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Group {
    /// All of them (merged sketches).
    All,
    /// Those an enrichment table places in this country.
    Country([u8; 2]),
    /// Those in this autonomous system.
    Asn(u32),
}

impl Group {
    /// From its label ([`Group::label`]); `None` when it is not one.
    pub fn parse(label: &str) -> Option<Group> {
        match label.split_once(':') {
            None if label.is_empty() => Some(Group::All),
            Some(("country", cc))
                if cc.len() == 2 && cc.bytes().all(|b| b.is_ascii_uppercase()) =>
            {
                let b = cc.as_bytes();
                Some(Group::Country([b[0], b[1]]))
            }
            Some(("asn", n)) => n.parse().ok().map(Group::Asn),
            _ => None,
        }
    }

    /// True when `table` places `ip` in this group (always for `All`).
    pub fn contains(self, table: &AsnTable, ip: Addr) -> bool {
        match self {
            Group::All => true,
            Group::Country(cc) => table.lookup(ip).is_some_and(|i| i.country.as_bytes() == cc),
            Group::Asn(n) => table.lookup(ip).is_some_and(|i| i.asn == n),
        }
    }

    /// As in [`Alert::group`]: empty, `country:CC` or `asn:N`.
    pub fn label(self) -> String {
        match self {
            Group::All => String::new(),
            Group::Country(c) => format!("country:{}", String::from_utf8_lossy(&c)),
            Group::Asn(n) => format!("asn:{n}"),
        }
    }
}

/// Distinct sources per (proto, port, country) and (proto, port, AS) in the
/// window starting at `w`, from its source rows.
fn grouped_sources(
    store: &dyn Store,
    table: &AsnTable,
    w: Timestamp,
    cfg: &DetectConfig,
) -> Result<FxHashMap<(Proto, u16, Group), u64>, StoreError> {
    let mut sets: FxHashMap<(Proto, u16, Group), FxHashSet<Addr>> = FxHashMap::default();
    for r in store.sources_between(w, Timestamp(w.0 + 1))? {
        if cfg.scope == crate::store::Scope::Local && r.sensor.starts_with(PEER_SENSOR_MARK) {
            continue;
        }
        let Some(info) = table.lookup(r.ip) else {
            continue;
        };
        let cc = info.country.as_bytes();
        let country = (cc.len() == 2 && cc.iter().all(u8::is_ascii_uppercase))
            .then(|| Group::Country([cc[0], cc[1]]));
        for p in &r.ports {
            if let Some(g) = country.filter(|_| cfg.by_country) {
                sets.entry((p.proto, p.port, g)).or_default().insert(r.ip);
            }
            if cfg.by_asn && info.asn != 0 {
                sets.entry((p.proto, p.port, Group::Asn(info.asn)))
                    .or_default()
                    .insert(r.ip);
            }
        }
    }
    Ok(sets.into_iter().map(|(k, v)| (k, v.len() as u64)).collect())
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            alpha: 0.02,
            // Chosen with benches' darkscope-detect-eval (see RESULTS.md):
            // k = 1.5, h = 5 had no false alarm over 14-day scenarios while
            // 3x rises were found within a window.
            k: 1.5,
            h: 5.0,
            min_sd: 0.15,
            min_ratio: 2.0,
            min_added: 10.0,
            warmup: 60,
            new_port_sources: 50,
            resolve_ratio: 1.5,
            resolve_after: 5,
            // A day of 1-minute windows.
            accept_after: 1440,
            scope: crate::store::Scope::Local,
            // Chosen with darkscope-detect-eval (RESULTS.md): ramps to 3x
            // over 6 hours are found, background, floods and outages raise
            // nothing.
            seasonal_days: 3.0,
            seasonal_ratio: 2.5,
            seasonal_windows: 15,
            by_country: true,
            by_asn: true,
        }
    }
}

/// What one window did to a port's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Event {
    /// A surge started; numbers at detection.
    Opened {
        /// Baseline distinct sources.
        baseline: f64,
        /// Observed distinct sources.
        observed: u64,
        /// Observed / baseline.
        ratio: f64,
        /// True for the new-port rule.
        new_port: bool,
    },
    /// The port is back to its baseline.
    Resolved,
    /// The port stayed up for `accept_after` windows: the alert resolves
    /// and that level is its new baseline.
    Accepted {
        /// The new baseline, in sources.
        baseline: f64,
    },
}

/// One port's detector state.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PortState {
    mean: f64,
    var: f64,
    n: u32,
    cusum: f64,
    open: bool,
    calm: u32,
    /// Per hour of the day (UTC): mean of ln(1 + sources) and windows seen.
    hours: Option<Box<[(f64, u32); 24]>>,
    /// Consecutive windows above the seasonal rule's bar.
    above: u32,
    /// Windows since the open alert opened, and their mean of y.
    open_for: u32,
    open_mean: f64,
}

impl PortState {
    /// A port the detector has watched for a while without a single source:
    /// one learned window of zero, so a first window with many sources
    /// falls under the new-port rule.
    pub fn quiet() -> PortState {
        PortState {
            n: 1,
            ..Default::default()
        }
    }

    /// The baseline in sources.
    pub fn baseline(&self) -> f64 {
        self.mean.exp_m1()
    }

    /// True while an alert is open.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Feeds one window's distinct sources (time of day unknown: the
    /// seasonal rule is off).
    pub fn step(&mut self, cfg: &DetectConfig, sources: u64) -> Option<Event> {
        self.step_at(cfg, sources, None)
    }

    /// Feeds one window's distinct sources; `hour` is its hour of the day
    /// (0-23, UTC) for the seasonal rule.
    pub fn step_at(
        &mut self,
        cfg: &DetectConfig,
        sources: u64,
        hour: Option<usize>,
    ) -> Option<Event> {
        let y = (sources as f64).ln_1p();
        let base = self.baseline();
        if self.open {
            self.open_for = self.open_for.saturating_add(1);
            self.open_mean += (y - self.open_mean) / self.open_for as f64;
            if cfg.accept_after > 0 && self.open_for >= cfg.accept_after {
                return Some(self.accept());
            }
            // Back to normal means back near the usual level for this hour
            // when it is known (a daily trough is not the end of a rise).
            let usual = hour
                .and_then(|h| self.hours.as_ref().map(|v| v[h % 24]))
                .filter(|(_, seen)| *seen >= 60 && cfg.seasonal_days > 0.0)
                .map_or(base, |(level, _)| level.exp_m1());
            if (sources as f64) <= usual.max(1.0) * cfg.resolve_ratio {
                self.calm += 1;
                if self.calm >= cfg.resolve_after {
                    self.close();
                    return Some(Event::Resolved);
                }
            } else {
                self.calm = 0;
            }
            return None;
        }
        if self.n < cfg.warmup {
            let new_port = self.n == 0 || base < 1.0;
            if new_port && sources >= cfg.new_port_sources && self.n > 0 {
                self.open();
                return Some(Event::Opened {
                    baseline: base,
                    observed: sources,
                    ratio: sources as f64 / base.max(1.0),
                    new_port: true,
                });
            }
            self.learn(cfg, y);
            return None;
        }
        if let Some(e) = hour.and_then(|h| self.seasonal_step(cfg, sources, y, h % 24)) {
            return Some(e);
        }
        let sd = self.var.sqrt().max(cfg.min_sd);
        let z = (y - self.mean) / sd;
        self.cusum = (self.cusum + z - cfg.k).max(0.0);
        let big_enough =
            sources as f64 >= base * cfg.min_ratio && sources as f64 >= base + cfg.min_added;
        if self.cusum > cfg.h && big_enough {
            self.open();
            return Some(Event::Opened {
                baseline: base,
                observed: sources,
                ratio: sources as f64 / base.max(1.0),
                new_port: false,
            });
        }
        // Windows that look like a surge in progress do not teach the baseline.
        if self.cusum == 0.0 || !big_enough {
            self.learn(cfg, y);
        }
        None
    }

    /// The slow-rise rule: the port's usual level at this hour of the day,
    /// learnt while the port is not above its bar.
    fn seasonal_step(
        &mut self,
        cfg: &DetectConfig,
        sources: u64,
        y: f64,
        h: usize,
    ) -> Option<Event> {
        if cfg.seasonal_days <= 0.0 {
            return None;
        }
        let hours = self.hours.get_or_insert_with(|| Box::new([(0.0, 0); 24]));
        let (level, seen) = hours[h];
        let base = level.exp_m1();
        // A day of this hour's windows (60 one-minute ones) before trusting it.
        let high = seen >= 60
            && sources as f64 >= base * cfg.seasonal_ratio
            && sources as f64 >= base + cfg.min_added;
        if high {
            self.above += 1;
            if self.above >= cfg.seasonal_windows {
                self.above = 0;
                self.open();
                // Resolution measures against the fast baseline: let it
                // start from the usual level, not from the ramp it followed.
                self.mean = self.mean.min(level);
                return Some(Event::Opened {
                    baseline: base,
                    observed: sources,
                    ratio: sources as f64 / base.max(1.0),
                    new_port: false,
                });
            }
            return None;
        }
        self.above = 0;
        let a = (1.0 / (seen as f64 + 1.0)).max(1.0 / (60.0 * cfg.seasonal_days));
        hours[h] = (level + a * (y - level), seen.saturating_add(1));
        None
    }

    fn open(&mut self) {
        self.open = true;
        self.calm = 0;
        self.open_for = 0;
        self.open_mean = 0.0;
    }

    fn close(&mut self) {
        self.open = false;
        self.cusum = 0.0;
        self.calm = 0;
        self.above = 0;
    }

    /// Takes the open alert's mean level as the baseline; the per-hour
    /// levels rise by the same factor (their daily shape is kept).
    fn accept(&mut self) -> Event {
        let shift = self.open_mean - self.mean;
        self.mean = self.open_mean;
        if let Some(hours) = self.hours.as_mut() {
            for (level, seen) in hours.iter_mut() {
                if *seen > 0 {
                    *level = (*level + shift).max(0.0);
                }
            }
        }
        self.close();
        Event::Accepted {
            baseline: self.baseline(),
        }
    }

    fn learn(&mut self, cfg: &DetectConfig, y: f64) {
        if self.n == 0 {
            self.mean = y;
            self.var = 0.0;
        } else {
            let a = if self.n < cfg.warmup {
                1.0 / (self.n as f64 + 1.0)
            } else {
                cfg.alpha
            };
            let d = y - self.mean;
            self.mean += a * d;
            self.var = (1.0 - a) * (self.var + a * d * d);
        }
        self.n = self.n.saturating_add(1);
    }
}

/// Tracks how many sensors report per window. A window with fewer sensors
/// than recently usual is skipped (neither learnt nor tested): merged
/// distinct sources fall when a sensor is offline, and a baseline that learnt
/// the fall would take the sensor's return for a surge.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Coverage {
    usual: f64,
}

impl Coverage {
    /// True when `sensors` reporting this window is full coverage.
    pub fn complete(&mut self, sensors: u32) -> bool {
        let n = sensors as f64;
        // The usual count follows rises at once and falls slowly (a sensor
        // decommissioned for good stops counting after about a day).
        self.usual = if n >= self.usual {
            n
        } else {
            self.usual - (self.usual - n) / 1440.0
        };
        n + 0.5 >= self.usual
    }
}

/// Runs the detector over windows as they become complete, and keeps the
/// alerts in the store. State lives in memory; on start it is rebuilt from
/// the stored history (`history`).
pub struct Detector {
    cfg: DetectConfig,
    ports: FxHashMap<(Proto, u16, Group), (PortState, Option<i64>)>,
    enrich: Option<Arc<AsnTable>>,
    coverage: Coverage,
    done_until: Option<Timestamp>,
    /// Windows processed since start.
    processed: u64,
    /// Windows are processed this long after they end (late uploads).
    pub grace_us: u64,
    /// History replayed at the first tick.
    pub history_us: u64,
    /// Window length assumed for "ended" (µs).
    pub window_us: u64,
}

/// A series for log lines: `tcp/23`, `tcp/23 from asn:64999`.
fn series_name(&(proto, port, group): &(Proto, u16, Group)) -> String {
    match group {
        Group::All => format!("{proto}/{port}"),
        g => format!("{proto}/{port} from {}", g.label()),
    }
}

fn severity(ratio: f64, new_port: bool) -> &'static str {
    if new_port {
        "new-port"
    } else if ratio >= 10.0 {
        "high"
    } else if ratio >= 3.0 {
        "medium"
    } else {
        "low"
    }
}

impl Detector {
    /// A detector with `cfg`.
    pub fn new(cfg: DetectConfig) -> Detector {
        Detector {
            cfg,
            ports: FxHashMap::default(),
            enrich: None,
            coverage: Coverage::default(),
            done_until: None,
            processed: 0,
            grace_us: 120_000_000,
            history_us: 6 * 3_600_000_000,
            window_us: 60_000_000,
        }
    }

    /// Also watches per source country and AS, placed by `table` (see
    /// [`DetectConfig::by_country`]).
    pub fn with_enrichment(mut self, table: Option<Arc<AsnTable>>) -> Detector {
        self.enrich = table;
        self
    }

    /// Processes every window that ended at least `grace` before `now` and
    /// was not processed yet. Returns the alerts opened.
    pub fn tick(&mut self, store: &dyn Store, now: Timestamp) -> Result<Vec<Alert>, StoreError> {
        if !self.cfg.enabled {
            return Ok(Vec::new());
        }
        let upto = Timestamp(now.0.saturating_sub(self.grace_us + self.window_us));
        let from = self
            .done_until
            .unwrap_or(Timestamp(upto.0.saturating_sub(self.history_us)));
        let mut opened = Vec::new();
        let scope = self.cfg.scope;
        for w in store.window_starts(from, Timestamp(upto.0 + 1), scope)? {
            if !self.coverage.complete(store.window_sensors(w, scope)?) {
                log::info!("window {w}: fewer sensors than usual reported; skipped by detection");
                self.done_until = Some(Timestamp(w.0 + 1));
                continue;
            }
            let mut seen: FxHashMap<(Proto, u16, Group), u64> = store
                .port_sources_at(w, scope)?
                .into_iter()
                .map(|(p, port, n)| ((p, port, Group::All), n))
                .collect();
            if let Some(t) = self.enrich.as_deref() {
                if self.cfg.by_country || self.cfg.by_asn {
                    seen.extend(grouped_sources(store, t, w, &self.cfg)?);
                }
            }
            // A port first seen after the warm-up has, in effect, a history
            // of zero sources; one seen during it is still being learned.
            let watched = self.processed >= self.cfg.warmup as u64;
            for key in seen.keys() {
                self.ports.entry(*key).or_insert_with(|| {
                    (
                        if watched {
                            PortState::quiet()
                        } else {
                            PortState::default()
                        },
                        None,
                    )
                });
            }
            self.processed += 1;
            let hour = ((w.0 / 3_600_000_000) % 24) as usize;
            for (key, (state, alert)) in self.ports.iter_mut() {
                let n = seen.get(key).copied().unwrap_or(0);
                match state.step_at(&self.cfg, n, Some(hour)) {
                    Some(Event::Opened {
                        baseline,
                        observed,
                        ratio,
                        new_port,
                    }) => {
                        let mut a = Alert {
                            id: 0,
                            proto: key.0,
                            port: key.1,
                            scope: scope.as_str().into(),
                            group: key.2.label(),
                            start: w,
                            severity: severity(ratio, new_port).into(),
                            baseline,
                            observed,
                            state: "open".into(),
                            resolved_at: None,
                        };
                        // Stored already (before a restart, or by a replica
                        // that led before us): adopt it, do not announce it again.
                        if let Some(known) = store.alerts(w, None)?.into_iter().find(|x| {
                            (x.proto, x.port, x.start) == (a.proto, a.port, a.start)
                                && (&x.scope, &x.group) == (&a.scope, &a.group)
                        }) {
                            *alert = Some(known.id);
                            continue;
                        }
                        a.id = store.insert_alert(&a)?;
                        log::warn!(
                            "surge on {}: {observed} distinct sources vs baseline {baseline:.1} (window {w})",
                            series_name(key)
                        );
                        *alert = Some(a.id);
                        opened.push(a);
                    }
                    Some(Event::Resolved) => {
                        if let Some(id) = alert.take() {
                            store.resolve_alert(id, w)?;
                        }
                    }
                    Some(Event::Accepted { baseline }) => {
                        if let Some(id) = alert.take() {
                            store.resolve_alert(id, w)?;
                            log::info!(
                                "{}: up for {} windows; alert {id} resolved, {baseline:.1} sources is its new baseline",
                                series_name(key),
                                self.cfg.accept_after
                            );
                        }
                    }
                    None => {}
                }
            }
            self.done_until = Some(Timestamp(w.0 + 1));
        }
        if self.done_until.is_none() {
            self.done_until = Some(from);
        }
        Ok(opened)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// Roughly Poisson(λ) via a normal approximation, non-negative.
    fn noisy(rng: &mut SmallRng, lambda: f64) -> u64 {
        let g: f64 = (0..12).map(|_| rng.gen::<f64>()).sum::<f64>() - 6.0;
        (lambda + g * lambda.sqrt()).round().max(0.0) as u64
    }

    const DAY: usize = 1440;

    /// Mean sources at window `t`: 40 ± 20 over the day.
    fn cycle(t: usize) -> f64 {
        40.0 + 20.0 * ((t % DAY) as f64 / DAY as f64 * std::f64::consts::TAU).sin()
    }

    fn run(series: &[u64]) -> Vec<(usize, Event)> {
        let cfg = DetectConfig::default();
        let mut st = PortState::default();
        series
            .iter()
            .enumerate()
            .filter_map(|(i, &x)| st.step(&cfg, x).map(|e| (i, e)))
            .collect()
    }

    #[test]
    fn threefold_surge_is_found_within_two_windows_and_resolves() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut s: Vec<u64> = (0..600).map(|_| noisy(&mut rng, 40.0)).collect();
        s.extend((0..15).map(|_| noisy(&mut rng, 120.0)));
        s.extend((0..60).map(|_| noisy(&mut rng, 40.0)));
        let ev = run(&s);
        assert!(
            matches!(ev[0], (i, Event::Opened { new_port: false, .. }) if (600..=602).contains(&i)),
            "{ev:?}"
        );
        assert!(matches!(ev[1], (i, Event::Resolved) if i > 615), "{ev:?}");
        assert_eq!(ev.len(), 2, "{ev:?}");
    }

    #[test]
    fn daily_cycle_and_noise_raise_nothing() {
        let mut rng = SmallRng::seed_from_u64(2);
        // Three days of 1-minute windows, sources between 20 and 60 with the time of day.
        let s: Vec<u64> = (0..3 * DAY).map(|t| noisy(&mut rng, cycle(t))).collect();
        assert_eq!(run(&s), vec![]);
    }

    /// Three days of a daily cycle, then a ramp to 3x over 6 hours: the
    /// fast baseline follows it, the per-hour one does not. The cycle
    /// alone raises nothing, with or without the hour.
    #[test]
    fn a_slow_ramp_is_found_against_the_usual_level_of_its_hour() {
        let mut rng = SmallRng::seed_from_u64(4);
        let onset = 3 * DAY + 600;
        let s: Vec<u64> = (0..4 * DAY)
            .map(|t| {
                let ramp = 1.0 + 2.0 * ((t.saturating_sub(onset)) as f64 / 360.0).min(1.0);
                noisy(&mut rng, cycle(t) * if t >= onset { ramp } else { 1.0 })
            })
            .collect();
        let cfg = DetectConfig::default();
        let run_at = |with_hour: bool, upto: usize| {
            let mut st = PortState::default();
            s[..upto]
                .iter()
                .enumerate()
                .filter_map(|(t, &x)| {
                    st.step_at(&cfg, x, with_hour.then_some(t % DAY / 60))
                        .map(|e| (t, e))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(run_at(true, onset), vec![], "the cycle alone");
        assert_eq!(
            run_at(false, s.len()),
            vec![],
            "without the hour the ramp goes unseen"
        );
        let ev = run_at(true, s.len());
        assert_eq!(ev.len(), 1, "{ev:?}");
        let (t, e) = ev[0];
        assert!(matches!(
            e,
            Event::Opened {
                new_port: false,
                ..
            }
        ));
        assert!(
            (onset + 200..onset + 500).contains(&t),
            "found {} windows in",
            t - onset
        );
    }

    /// A rise that stays: one alert, resolved after `accept_after` windows
    /// with the new level as baseline; a day more at that level raises
    /// nothing (neither rule), a further 3x rise on top alerts again.
    #[test]
    fn a_lasting_shift_becomes_the_baseline_and_the_next_rise_alerts() {
        let mut rng = SmallRng::seed_from_u64(5);
        let (shift, second) = (3 * DAY + 100, 6 * DAY);
        let level = |t: usize| {
            cycle(t)
                * if t >= second {
                    9.0
                } else if t >= shift {
                    3.0
                } else {
                    1.0
                }
        };
        let s: Vec<u64> = (0..6 * DAY + 60)
            .map(|t| noisy(&mut rng, level(t)))
            .collect();
        let cfg = DetectConfig::default();
        let mut st = PortState::default();
        let ev: Vec<(usize, Event)> = s
            .iter()
            .enumerate()
            .filter_map(|(t, &x)| st.step_at(&cfg, x, Some(t % DAY / 60)).map(|e| (t, e)))
            .collect();
        assert_eq!(ev.len(), 3, "{ev:?}");
        assert!(
            matches!(ev[0], (t, Event::Opened { .. }) if (shift..shift + 3).contains(&t)),
            "{ev:?}"
        );
        let (t, Event::Accepted { baseline }) = ev[1] else {
            panic!("{ev:?}")
        };
        assert_eq!(t - ev[0].0, cfg.accept_after as usize);
        assert!((80.0..150.0).contains(&baseline), "new baseline {baseline}");
        assert!(
            matches!(ev[2], (t, Event::Opened { .. }) if (second..second + 3).contains(&t)),
            "{ev:?}"
        );
        // Off, the first alert just stays open.
        let never = DetectConfig {
            accept_after: 0,
            ..cfg
        };
        let mut st = PortState::default();
        let n = s[..second]
            .iter()
            .enumerate()
            .filter_map(|(t, &x)| st.step_at(&never, x, Some(t % DAY / 60)))
            .count();
        assert_eq!(n, 1);
        assert!(st.is_open());
    }

    #[test]
    fn small_ports_do_not_alert_on_noise() {
        let mut rng = SmallRng::seed_from_u64(3);
        let s: Vec<u64> = (0..2000).map(|_| noisy(&mut rng, 2.0)).collect();
        assert_eq!(run(&s), vec![]);
    }

    #[test]
    fn a_new_port_alerts_when_many_sources_appear() {
        let mut s = vec![0u64; 10];
        s.extend([80, 90, 85]);
        let ev = run(&s);
        assert!(
            matches!(ev[0], (10, Event::Opened { new_port: true, .. })),
            "{ev:?}"
        );
    }
}
